//! `inspect`: shows a container's view of its configuration. Arguments are actions, in order:
//! `env` prints the environment (sorted), `cat:PATH` prints a file, `ls:PATH` lists a directory,
//! `write:PATH=TEXT` writes a file, `need:PATH` exits 1 unless the file exists, `sleep:MS` sleeps
//! (so a container stays up for its exec probes, which run it again with the probe's actions),
//! `upper` copies stdin to stdout in upper case until stdin ends, `exit:N` exits with code N,
//! `warn:TEXT` prints TEXT on stderr, `echo:TEXT` prints TEXT, and `spam:N` prints N numbered lines
//! of 100 bytes (a log flood), and `tcp:HOST:PORT=TEXT` connects over wasi:sockets (a cluster
//! name, a ClusterIP or a pod IP), sends TEXT, and prints what comes back before the peer closes;
//! `udp-echo:PORT` sends every datagram to `$POD_IP:PORT` back to its sender, until killed.

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
        } else if action == "upper" {
            let mut input = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input);
            print!("{}", input.to_uppercase());
        } else if let Some(code) = action.strip_prefix("exit:").and_then(|c| c.parse().ok()) {
            std::process::exit(code);
        } else if let Some(text) = action.strip_prefix("warn:") {
            eprintln!("{text}");
        } else if let Some(ms) = action.strip_prefix("sleep:").and_then(|ms| ms.parse().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        } else if let Some(text) = action.strip_prefix("echo:") {
            println!("{text}");
        } else if let Some((target, text)) = action.strip_prefix("tcp:").and_then(|a| a.split_once('=')) {
            match exchange(target, text) {
                Ok(reply) => println!("tcp {target}: {reply}"),
                Err(e) => {
                    println!("tcp {target}: error: {e}");
                    std::process::exit(1);
                }
            }
        } else if let Some(port) = action.strip_prefix("udp-echo:") {
            let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".to_string());
            if let Err(e) = udp_echo(&format!("{ip}:{port}")) {
                eprintln!("inspect: udp-echo on {ip}:{port}: {e}");
                std::process::exit(1);
            }
        } else if let Some(n) = action.strip_prefix("spam:").and_then(|n| n.parse::<u64>().ok()) {
            use std::io::Write;
            // Buffered: a flood comes many lines per write, as a chatty program's output usually does.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for i in 0..n {
                let _ = writeln!(out, "spam {i:08} {}", "x".repeat(85));
            }
        } else {
            eprintln!("inspect: unknown action {action:?}");
            std::process::exit(2);
        }
    }
}

/// Sends `text` to `target` (HOST:PORT, the host resolved by the node), half-closes, and reads the
/// reply until the peer closes.
fn exchange(target: &str, text: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(target)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.write_all(text.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Answers every datagram to `addr` with itself.
fn udp_echo(addr: &str) -> std::io::Result<()> {
    let socket = std::net::UdpSocket::bind(addr)?;
    println!("udp-echo: listening on {}", socket.local_addr()?);
    let mut buffer = [0u8; 65_535];
    loop {
        let (n, from) = socket.recv_from(&mut buffer)?;
        socket.send_to(&buffer[..n], from)?;
    }
}
