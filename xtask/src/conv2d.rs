//! The unrolled part of `crates/unravel-device/shaders/conv2d.wgsl`'s
//! register-blocked kernels, written to `conv2d_generated.wgsl` beside it
//! (the shader loader appends it to conv2d.wgsl).
//!
//! WGSL has no macros. The `_sg` kernels keep their ROWS x NV accumulators
//! in named private registers and unroll every step over them (pipeline
//! overrides prune the unused ones). Loops over arrays with trip counts
//! from overrides were measured as an alternative (docs/kernels.md): they
//! keep the accumulators in registers on lavapipe only while Mesa unrolls
//! every loop that indexes them, one rolled loop makes the kernel 5-12x
//! slower without any error, and `subgroupBroadcast` needs a constant lane
//! index, so the eight broadcast steps could not be loops anyway.
//!
//! Shape legend: a lane holds ROWS rows (pixels, or weight columns) of 4*NV
//! columns (channels): acc{row}{block} is row `row`, columns 4*block..+3.

use std::fmt::Write;

/// Largest ROWS (rows per lane) and NV (vec4 column blocks per lane).
const MAX_ROWS: usize = 8;
const MAX_NV: usize = 8;

/// Row r's A value: rows 0..3 in av0, 4..7 in av1.
fn a_of_row(r: usize) -> String {
    format!("av{}.{}", r / 4, ["x", "y", "z", "w"][r % 4])
}

/// `if (COND) { BODY }`, or BODY alone when the condition always holds.
fn guarded(cond: Option<String>, body: &str) -> String {
    match cond {
        Some(c) => format!("if ({c}) {{ {body} }}"),
        None => body.to_string(),
    }
}

fn rows_above(r: usize) -> Option<String> {
    (r > 0).then(|| format!("ROWS > {r}u"))
}

fn accumulators() -> String {
    let mut s = String::new();
    for r in 0..MAX_ROWS {
        for b in 0..MAX_NV {
            writeln!(s, "var<private> acc{r}{b}: vec4<f32>;").unwrap();
        }
    }
    s
}

fn chunk_registers() -> String {
    (0..MAX_NV)
        .map(|b| format!("var<private> bw{b}: vec4<f32>;\n"))
        .collect()
}

/// A function whose body multiplies `rows` rows' A by each column block b
/// of B, after `fetch(b)` (a line that binds b{b}, or nothing).
fn fma_function(signature: &str, rows: usize, fetch: impl Fn(usize) -> Option<String>) -> String {
    let mut s = format!("fn {signature} {{\n");
    for b in 0..MAX_NV {
        let indent = if b == 0 { "    " } else { "        " };
        if b > 0 {
            writeln!(s, "    if (NV > {b}u) {{").unwrap();
        }
        if let Some(binding) = fetch(b) {
            writeln!(s, "{indent}let b{b} = {binding};").unwrap();
        }
        for r in 0..rows {
            let fma = format!("acc{r}{b} += {} * b{b};", a_of_row(r));
            writeln!(s, "{indent}{}", guarded(rows_above(r), &fma)).unwrap();
        }
        if b > 0 {
            s += "    }\n";
        }
    }
    s += "}\n";
    s
}

/// One step: every row's A times column block b of the B entry `fetch(b)`.
fn step(name_and_args: &str, fetch: impl Fn(usize) -> String) -> String {
    fma_function(name_and_args, MAX_ROWS, |b| Some(fetch(b)))
}

fn steps() -> String {
    let mut s = step("step_shuffle(j: u32)", |b| {
        format!("subgroupShuffle(bw{b}, j)")
    });
    s += "\n// As step_shuffle for j = 0 .. 7, with constant-index broadcasts.\n";
    for j in 0..8 {
        s += &step(&format!("step{j}()"), |b| {
            format!("subgroupBroadcast(bw{b}, {j}u)")
        });
    }
    s
}

fn store_each_row() -> String {
    let mut s = String::new();
    for r in 0..MAX_ROWS {
        let cond = match rows_above(r) {
            Some(c) => format!("{c} && row{r}.store"),
            None => format!("row{r}.store"),
        };
        writeln!(s, "    if ({cond}) {{").unwrap();
        writeln!(s, "        let at = row{r}.out_at;").unwrap();
        for b in 0..MAX_NV {
            let at = if b == 0 {
                "at".to_string()
            } else {
                format!("at + {}u * step", 4 * b)
            };
            let store = format!(
                "store_cols(finish(acc{r}{b}, s{b}, b{b}), {at}, step, cols_left(c0, {b}u, cols));"
            );
            let cond = (b > 0).then(|| format!("NV > {b}u"));
            writeln!(s, "        {}", guarded(cond, &store)).unwrap();
        }
        s += "    }\n";
    }
    s
}

/// Window mode's B registers: tw{kx}{b}, tap kx's column block b.
fn tap_registers() -> String {
    let mut s = String::new();
    for kx in 0..3 {
        for b in 0..MAX_NV {
            writeln!(s, "var<private> tw{kx}{b}: vec4<f32>;").unwrap();
        }
    }
    s
}

fn load_taps() -> String {
    let mut s =
        String::from("fn load_taps(at: u32, ok: bool) {\n    let i = select(0u, at, ok);\n");
    for kx in 0..3 {
        for b in 0..MAX_NV {
            let load = format!("tw{kx}{b} = select(ZERO4, bp[i + {kx}u * NV + {b}u], ok);");
            let cond = (b > 0).then(|| format!("NV > {b}u"));
            writeln!(s, "    {}", guarded(cond, &load)).unwrap();
        }
    }
    s += "}\n";
    s
}

/// acc{row}{block} += av0[row] * b{block}: one step's multiply-adds for
/// given B values (window mode, rows 0..3).
fn fma_rows() -> String {
    let params: Vec<String> = (0..MAX_NV).map(|b| format!("b{b}: vec4<f32>")).collect();
    let mut s = fma_function(&format!("fma_rows({})", params.join(", ")), 4, |_| None);
    // Rows 4..7 (A in av1): the second 4 pixels of 8, or WINDOW = 4's
    // pixels at tap 1.
    writeln!(s, "fn fma_rows47({}) {{", params.join(", ")).unwrap();
    for b in 0..MAX_NV {
        let fmas: Vec<String> = (4..8)
            .map(|r| format!("acc{r}{b} += {} * b{b};", a_of_row(r)))
            .collect();
        let cond = (b > 0).then(|| format!("NV > {b}u"));
        writeln!(s, "    {}", guarded(cond, &fmas.join(" "))).unwrap();
    }
    s += "}\n";
    s
}

/// window_pair{j}: the pair of chunk lane j: its window, then its three
/// taps with lane j's B entries.
fn window_pairs() -> String {
    let mut s = String::new();
    for j in 0..8 {
        writeln!(s, "fn window_pair{j}() {{").unwrap();
        writeln!(s, "    next_window({j}u < pair_left);").unwrap();
        let mut taps = Vec::new();
        for kx in 0..3 {
            let names: Vec<String> = (0..MAX_NV).map(|b| format!("t{kx}{b}")).collect();
            for (b, name) in names.iter().enumerate() {
                let cast = format!("subgroupBroadcast(tw{kx}{b}, {j}u)");
                let value = if b == 0 {
                    cast
                } else {
                    format!("select(ZERO4, {cast}, NV > {b}u)")
                };
                writeln!(s, "    let {name} = {value};").unwrap();
            }
            taps.push(names.join(", "));
        }
        writeln!(s, "    if (WINDOW == 4u) {{").unwrap();
        writeln!(s, "        av0 = win0;").unwrap();
        writeln!(s, "        fma_rows({});", taps[0]).unwrap();
        writeln!(s, "        av1 = win1;").unwrap();
        writeln!(s, "        fma_rows47({});", taps[1]).unwrap();
        writeln!(s, "        av0 = win2;").unwrap();
        writeln!(s, "        fma_rows({});", taps[2]).unwrap();
        writeln!(s, "    }} else {{").unwrap();
        for (kx, tap) in taps.iter().enumerate() {
            writeln!(s, "        av0 = win{kx};").unwrap();
            writeln!(s, "        fma_rows({tap});").unwrap();
            writeln!(s, "        if (ROWS == 8u) {{").unwrap();
            writeln!(s, "            av1 = win{kx}b;").unwrap();
            writeln!(s, "            fma_rows47({tap});").unwrap();
            writeln!(s, "        }}").unwrap();
        }
        s += "    }\n}\n";
    }
    s
}

/// The body of store_rows's vec4 path: the 4 rows (4 adjacent pixels in
/// window mode) of each column are one vec4, columns c0 + 4b + c at base +
/// (4b + c) * step4 (in vec4s).
fn vec4_stores() -> String {
    let mut s = String::new();
    for b in 0..MAX_NV {
        let body = format!(
            "store_block4(mat4x4<f32>(acc0{b}, acc1{b}, acc2{b}, acc3{b}), base + {}u * step4, step4, \
             cols_left(c0, {b}u, cols), s{b}, b{b});",
            4 * b
        );
        let cond = (b > 0).then(|| format!("NV > {b}u"));
        writeln!(s, "            {}", guarded(cond, &body)).unwrap();
    }
    // With 8 rows (WINDOW = 1 or 3, pixels in order): rows 4..7 are the
    // next vec4.
    s += "            if (ROWS == 8u) {\n";
    for b in 0..MAX_NV {
        let body = format!(
            "store_block4(mat4x4<f32>(acc4{b}, acc5{b}, acc6{b}, acc7{b}), base + 1u + {}u * step4, \
             step4, cols_left(c0, {b}u, cols), s{b}, b{b});",
            4 * b
        );
        let cond = (b > 0).then(|| format!("NV > {b}u"));
        writeln!(s, "                {}", guarded(cond, &body)).unwrap();
    }
    s += "            }\n";
    s
}

/// The stride-2 input gradient's rows in pixel order (before its vec4
/// stores): rows 0..3 hold every second pixel from the lane's first when P
/// is even, from its second when P is odd, and rows 4..7 the others.
fn pixel_order_s2_body() -> String {
    // Pixel k's row when P is even and when it is odd.
    let row_of = |k: usize, odd: bool| {
        if (k % 2 == 1) != odd {
            4 + k / 2
        } else {
            k / 2
        }
    };
    let mut s = String::new();
    for b in 0..MAX_NV {
        let mut body = String::new();
        for r in 0..MAX_ROWS {
            write!(body, "let o{r} = acc{r}{b}; ").unwrap();
        }
        for k in 0..MAX_ROWS {
            let (even, odd) = (row_of(k, false), row_of(k, true));
            write!(body, "acc{k}{b} = select(o{even}, o{odd}, odd); ").unwrap();
        }
        let cond = (b > 0).then(|| format!("NV > {b}u"));
        writeln!(s, "    {}", guarded(cond, body.trim_end())).unwrap();
    }
    s
}

/// store_rows's per-column epilogue: scale s{b} (1 without a folded batch
/// norm) and shift b{b} (the bias, the batch norm's shift, or 0).
fn epilogue_vectors() -> String {
    let mut s = String::new();
    for b in 0..MAX_NV {
        writeln!(s, "    var s{b} = vec4<f32>(1.0);").unwrap();
        writeln!(s, "    var b{b} = ZERO4;").unwrap();
    }
    s += "    if (epilogue) {\n";
    s += "        let affine = p.affine != 0u;\n";
    s += "        let shift_at = select(v_at, v_at + p.c_out, affine);\n";
    for (reg, at) in [("b", "shift_at"), ("s", "v_at")] {
        if reg == "s" {
            s += "        if (affine) {\n";
        }
        let indent = if reg == "s" {
            "            "
        } else {
            "        "
        };
        for b in 0..MAX_NV {
            let offset = if b == 0 {
                String::new()
            } else {
                format!(" + {}u", 4 * b)
            };
            let load = format!("{reg}{b} = load_v4({at}{offset}, cols_left(c0, {b}u, cols));");
            let cond = (b > 0).then(|| format!("NV > {b}u"));
            writeln!(s, "{indent}{}", guarded(cond, &load)).unwrap();
        }
        if reg == "s" {
            s += "        }\n";
        }
    }
    s += "    }\n";
    s
}

/// Elements of a weight-gradient window: (CHUNK - 1) * S + 3 for S <= 2.
const WEIGHT_WINDOW: usize = 7 * 2 + 3;

/// The weight gradient's window registers: ea{e} for the lane's first pair
/// (rows 0..2), eb{e} for its second (rows 3..5).
fn weight_window_registers() -> String {
    let mut s = String::new();
    for pair in ["ea", "eb"] {
        for e in 0..WEIGHT_WINDOW {
            writeln!(s, "var<private> {pair}{e}: f32;").unwrap();
        }
    }
    s
}

/// load_weight_window: element e of each pair's window, at x column x_s + e
/// of its input row (zero outside the image); elements 10.. only at S = 2.
/// Where A4_SHIFT < 4, the vec4s wholly inside the windows load first.
fn weight_window_loads() -> String {
    let mut s = String::from(
        "fn load_weight_window(off: u32, oy_s: i32, ox_s: i32) {\n    \
         let ya = row0.live && u32(row0.y0 + oy_s) < p.h;\n    \
         let yb = row3.live && u32(row3.y0 + oy_s) < p.h;\n    \
         let x_s = row0.x0 + ox_s;\n    \
         let at_a = row0.at + off;\n    \
         let at_b = row3.at + off;\n    \
         let len = weight_window_len();\n    \
         if (A4_SHIFT < 4u) { load_weight_window4(at_a, at_b, x_s, ya, yb); }\n",
    );
    for e in 0..WEIGHT_WINDOW {
        let pair_loads = format!(
            "ea{e} = window_element(&wqa, len, {e}u, at_a, x_s, ya, p.w); \
             eb{e} = window_element(&wqb, len, {e}u, at_b, x_s, yb, p.w);"
        );
        let cond = (e >= 10).then(|| "WINDOW == 2u".to_string());
        writeln!(s, "    {}", guarded(cond, &pair_loads)).unwrap();
    }
    s += "}\n";
    s
}

/// weight_window_step{j}: rows 0..5 (taps 0..2 of both pairs) at step j of
/// a chunk read window elements j*S + kx.
fn weight_window_steps() -> String {
    let mut s = String::new();
    for j in 0..8 {
        writeln!(s, "fn weight_window_step{j}() {{").unwrap();
        for (stride, cond) in [(2, "if (WINDOW == 2u) {"), (1, "} else {")] {
            let e = j * stride;
            writeln!(s, "    {cond}").unwrap();
            writeln!(
                s,
                "        av0 = vec4<f32>(ea{e}, ea{}, ea{}, eb{e});",
                e + 1,
                e + 2
            )
            .unwrap();
            writeln!(
                s,
                "        av1 = vec4<f32>(eb{}, eb{}, 0.0, 0.0);",
                e + 1,
                e + 2
            )
            .unwrap();
        }
        s += "    }\n}\n";
    }
    s
}

/// store_rows, with its body's unrolled parts: the epilogue's vectors,
/// the vec4 stores of window mode and the scalar store of each row.
fn store_rows() -> String {
    let mut s = String::from(
        "// Stores the rows: columns c0.. (of `cols`) at out_at + c*step, through\n\
         // the forward's epilogue if `epilogue`: y = acc + bias (v[v_at + c]), or\n\
         // with a folded batch norm (p.affine) y = acc * v[v_at + c] + v[v_at + K +\n\
         // c]; then max(y, 0) if p.relu.\n\
         fn store_rows(step: u32, c0: u32, cols: u32, epilogue: bool, v_at: u32) {\n",
    );
    s += &epilogue_vectors();
    s += "    if (STORE4) {\n\
          \x20       // Window mode (WINDOW < 4): the rows are adjacent pixels from the\n\
          \x20       // lane's first, at row0.out_at.\n\
          \x20       if (row0.store) {\n\
          \x20           let base = row0.out_at / 4u;\n\
          \x20           let step4 = step / 4u;\n";
    s += &vec4_stores();
    s += "        }\n        return;\n    }\n";
    s += &store_each_row();
    s += "}\n";
    s
}

/// pixel_order_s2: rows 0..7 of conv2d_backward_input_window_s2 into the
/// order of the lane's 8 adjacent pixels, for its vec4 stores.
fn pixel_order_s2() -> String {
    let mut s = String::from(
        "// Rows 0..7 of conv2d_backward_input_window_s2 into the order of the\n\
         // lane's 8 adjacent pixels, for its vec4 stores.\n\
         fn pixel_order_s2(odd: bool) {\n",
    );
    s += &pixel_order_s2_body();
    s += "}\n";
    s
}

/// A part of the generated file: its name and its generator.
type Part = (&'static str, fn() -> String);

/// The generated file's parts, in order.
const PARTS: [Part; 12] = [
    ("accumulators", accumulators),
    ("chunk registers", chunk_registers),
    ("steps", steps),
    ("tap registers", tap_registers),
    ("load taps", load_taps),
    ("fma rows", fma_rows),
    ("window pairs", window_pairs),
    ("weight window registers", weight_window_registers),
    ("weight window loads", weight_window_loads),
    ("weight window steps", weight_window_steps),
    ("store rows", store_rows),
    ("pixel order s2", pixel_order_s2),
];

/// The whole of `conv2d_generated.wgsl`.
pub fn generate() -> String {
    let mut s = String::from(
        "// GENERATED by `cargo xtask codegen` from xtask/src/conv2d.rs: do not edit.\n\
         // The unrolled part of conv2d.wgsl's register-blocked kernels (see there),\n\
         // appended to it when the shader is loaded.\n\
         //\n\
         // Shape legend: acc{row}{block} holds row `row` (a pixel or weight column)\n\
         // of a lane, columns 4*block .. 4*block + 3; ROWS x NV of them are live.\n",
    );
    for (name, part) in PARTS {
        writeln!(s, "\n// ---- {name}").unwrap();
        s += &part();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed file is what the generators write: edit the
    /// generators, then run `cargo xtask codegen`.
    #[test]
    fn the_committed_shader_is_current() {
        let path = crate::generated_path();
        let committed = std::fs::read_to_string(&path).unwrap();
        let expected = generate();
        let line = committed
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(expected.lines().count()));
        assert!(
            committed == expected,
            "{} differs from its generators from line {}; run `cargo xtask codegen`",
            path.display(),
            line + 1
        );
    }

    #[test]
    fn generators_cover_every_register() {
        // Every accumulator the steps update is declared and stored.
        let steps = steps();
        let stores = store_each_row();
        let declared = accumulators();
        for r in 0..MAX_ROWS {
            for b in 0..MAX_NV {
                let acc = format!("acc{r}{b}");
                assert!(declared.contains(&format!("{acc}:")), "{acc} undeclared");
                assert_eq!(steps.matches(&format!("{acc} +=")).count(), 9, "{acc}");
                assert_eq!(
                    stores.matches(&format!("finish({acc},")).count(),
                    1,
                    "{acc}"
                );
            }
        }
    }
}
