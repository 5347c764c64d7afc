//! README's code is code the workspace builds.

#[test]
fn readme_compiled_in_snippet_is_the_edition_2024_example_verbatim() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example =
        std::fs::read_to_string(format!("{root}/examples/compiled-in/src/main.rs")).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{example}```\n")),
        "README's compiled-in snippet differs from examples/compiled-in/src/main.rs: copy the file into README"
    );
}
