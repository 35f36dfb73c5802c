//! `inspect`: shows a container's view of its configuration. Arguments are actions, in order:
//! `env` prints the environment (sorted), `cat:PATH` prints a file, `ls:PATH` lists a directory,
//! `write:PATH=TEXT` writes a file, `need:PATH` exits 1 unless the file exists.

fn main() {
    for action in std::env::args().skip(1) {
        if action == "env" {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                println!("{k}={v}");
            }
        } else if let Some(path) = action.strip_prefix("cat:") {
            match std::fs::read_to_string(path) {
                Ok(text) => println!("{path}: {text}"),
                Err(e) => println!("{path}: error: {e}"),
            }
        } else if let Some(path) = action.strip_prefix("ls:") {
            let mut names: Vec<String> = match std::fs::read_dir(path) {
                Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
                Err(e) => vec![format!("error: {e}")],
            };
            names.sort();
            println!("{path}: {}", names.join(","));
        } else if let Some((path, text)) = action.strip_prefix("write:").and_then(|a| a.split_once('=')) {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("inspect: writing {path}: {e}");
                std::process::exit(1);
            }
        } else if let Some(path) = action.strip_prefix("need:") {
            if !std::path::Path::new(path).exists() {
                eprintln!("inspect: {path} does not exist yet");
                std::process::exit(1);
            }
        } else {
            eprintln!("inspect: unknown action {action:?}");
            std::process::exit(2);
        }
    }
}
