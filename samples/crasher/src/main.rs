//! `crasher`: starts, waits CRASH_AFTER_MS milliseconds (default 200), says so on stderr and exits
//! with code 1 — the sample for restart policies and CrashLoopBackOff.

fn main() {
    let delay: u64 = std::env::var("CRASH_AFTER_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    println!("crasher: started, exiting in {delay} ms");
    std::thread::sleep(std::time::Duration::from_millis(delay));
    eprintln!("crasher: exiting with code 1");
    std::process::exit(1);
}
