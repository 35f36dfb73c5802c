//! `spinner`: a busy loop that never sleeps or calls the host — the sample for CPU fairness (its
//! neighbours on the node must keep answering).

fn main() {
    println!("spinner: spinning");
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
    }
}
