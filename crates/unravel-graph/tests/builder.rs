//! The builder's shape inference, naming and block records.

use unravel_graph::*;

#[test]
fn a_shape_mismatch_names_the_node_and_both_shapes() {
    let mut b = GraphBuilder::new(Shape::new(3, 8, 8));
    let x = b.input();
    let y = b.conv2d(x, "conv1", Conv2d::new(4, 3).stride(2)).unwrap();
    let err = b
        .scoped("layer1", |b| b.add(x, y, "merge", false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer1.merge"), "{err}");
    assert!(err.contains("3x8x8") && err.contains("4x4x4"), "{err}");
}

#[test]
fn conv_output_shapes_follow_pytorch() {
    let mut b = GraphBuilder::new(Shape::new(3, 9, 7));
    let x = b.input();
    let y = b
        .conv2d(x, "c", Conv2d::new(6, 3).stride(2).groups(3).with_bias())
        .unwrap();
    assert_eq!(b.shape(y), Shape::new(6, 5, 4));
    let z = b.conv2d(y, "d", Conv2d::new(6, 7).groups(6)).unwrap();
    assert_eq!(b.shape(z), Shape::new(6, 5, 4));
    assert!(
        b.conv2d(z, "e", Conv2d::new(5, 3).groups(2)).is_err(),
        "5 channels do not split into 2 groups"
    );
    let g = b.finish(z);
    let names: Vec<&str> = g.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["c.weight", "c.bias", "d.weight"]);
    assert_eq!(g.params[0].shape, vec![6, 1, 3, 3]);
}

#[test]
fn a_residual_block_records_branch_shortcut_and_merge() {
    let mut b = GraphBuilder::new(Shape::new(4, 6, 6));
    let x = b.input();
    let y = b
        .scoped("layer1", |b| {
            b.scoped("0", |b| {
                b.residual(
                    x,
                    1,
                    Merge::AddRelu,
                    |b, x| b.shortcut_a(x, "shortcut", 8, 2),
                    |b, x| {
                        let h = b.conv2d(x, "conv1", Conv2d::new(8, 3).stride(2))?;
                        b.batchnorm(h, "bn1", false)
                    },
                )
            })
        })
        .unwrap();
    let g = b.finish(y);
    let (_, block) = g.residual_blocks().next().unwrap();
    assert_eq!(block.name, "layer1.0");
    let BlockKind::Residual {
        merge,
        shortcut,
        downsampling,
        ..
    } = block.kind
    else {
        panic!("not residual")
    };
    assert!(downsampling);
    assert_eq!(g.node(merge).op, Op::Add { relu: true });
    // The branch holds the conv and BN, not the shortcut or the merge.
    let kinds: Vec<&str> = block.nodes.iter().map(|n| g.node(*n).op.kind()).collect();
    assert_eq!(kinds, ["conv2d", "batchnorm"]);
    assert_eq!(
        g.node(g.value(shortcut).producer.unwrap()).op.kind(),
        "shortcut-a"
    );
}

#[test]
fn a_dense_block_writes_layers_into_slices_of_one_buffer() {
    let mut b = GraphBuilder::new(Shape::new(5, 4, 4));
    let x = b.input();
    let y = b
        .dense_block(x, 1, 3, 2, |b, x, _| {
            let h = b.batchnorm(x, "norm1", true)?;
            b.conv2d(h, "conv1", Conv2d::new(2, 3))
        })
        .unwrap();
    let g = b.finish(y);
    assert_eq!(g.shape(y), Shape::new(11, 4, 4));
    let convs: Vec<&Node> = g.nodes.iter().filter(|n| n.op.kind() == "conv2d").collect();
    assert_eq!(convs.len(), 3);
    for (i, conv) in convs.iter().enumerate() {
        // Layer i reads channels 0..5+2i and writes channels 5+2i..7+2i.
        let bn_input = g.node(g.value(conv.inputs[0]).producer.unwrap()).inputs[0];
        assert_eq!(
            g.value(bn_input).storage,
            Storage::ChannelsOf { parent: y, c0: 0 }
        );
        assert_eq!(g.shape(bn_input).c, 5 + 2 * i);
        assert_eq!(
            g.value(conv.output).storage,
            Storage::ChannelsOf {
                parent: y,
                c0: 5 + 2 * i
            }
        );
    }
    assert_eq!(g.params[0].name, "denselayer1.norm1.weight");
}
