//! Rebuild when a migration changes: `sqlx::migrate!` embeds them at compile time and
//! cargo cannot see that dependency on its own.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
