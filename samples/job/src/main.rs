//! `job`: a run-to-completion command. It counts the primes below N (first argument, default
//! 100000), prints the count and exits 0; a non-numeric argument makes it exit 2.

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "100000".to_string());
    let Ok(limit) = arg.parse::<usize>() else {
        eprintln!("job: {arg:?} is not a number");
        std::process::exit(2);
    };
    let mut sieve = vec![true; limit.max(2)];
    sieve[0] = false;
    sieve[1] = false;
    let mut i = 2;
    while i * i < limit {
        if sieve[i] {
            let mut j = i * i;
            while j < limit {
                sieve[j] = false;
                j += i;
            }
        }
        i += 1;
    }
    let count = sieve.iter().take(limit).filter(|p| **p).count();
    println!("primes below {limit}: {count}");
}
