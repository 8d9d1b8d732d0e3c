//! Prints the reference models as `.qir` (how `examples/*.qir` were made):
//! `cargo run --example print_models -- mbv2_tiny`.
fn main() -> qatc::Result<()> {
    for name in std::env::args().skip(1) {
        let m = qatc::models::by_name(&name, 0)?;
        print!("{}", qatc::ir::text::print(&m.graph));
    }
    Ok(())
}
