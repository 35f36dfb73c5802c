//! `hog`: grows its memory without bound, one MiB at a time, reporting every 8 MiB — the sample
//! for `resources.limits.memory` (the agent stops it as OOMKilled).

fn main() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really used, not just reserved.
        held.push(vec![0xA5; 1 << 20]);
        if held.len() % 8 == 0 {
            println!("hog: holding {} MiB", held.len());
        }
    }
}
