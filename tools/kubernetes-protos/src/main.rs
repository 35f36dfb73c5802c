//! `kubernetes-protos PROTO_ROOT OUT.fds`: compiles every `generated.proto` under PROTO_ROOT (with
//! its imports, without comments) into one `FileDescriptorSet`.

use std::path::{Path, PathBuf};

use prost::Message;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(root), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: kubernetes-protos PROTO_ROOT OUT.fds");
        std::process::exit(2);
    };
    let root = PathBuf::from(root);
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut compiler = protox::Compiler::new([&root]).expect("a readable proto root");
    compiler.include_imports(true).include_source_info(false);
    if let Err(e) = compiler.open_files(&files) {
        eprintln!("kubernetes-protos: {e}");
        std::process::exit(1);
    }
    let set = compiler.file_descriptor_set();
    std::fs::write(&out, set.encode_to_vec()).expect("write the descriptor set");
    eprintln!("{} files -> {out}", set.file.len());
}

/// The `generated.proto` files under `dir`, relative to `root` (as their imports name them).
fn collect(dir: &Path, root: &Path, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, root, files);
        } else if path.file_name().is_some_and(|n| n == "generated.proto") {
            files.push(path.strip_prefix(root).expect("under the root").to_string_lossy().into_owned());
        }
    }
}
