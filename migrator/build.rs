// `sqlx::migrate!` embeds migrations/ at build time: rebuild when that directory changes.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
