pub use unravel_graph as graph;
