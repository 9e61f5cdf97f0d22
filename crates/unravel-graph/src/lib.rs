pub use unravel_device as device;
