//! Kubernetes resource quantities as the agent needs them: memory in bytes (`64Mi`, `1G`,
//! `1048576`) and CPU in millicores (`100m`, `0.5`, `2`). Exotic forms (exponents, `Ti`/`Pi`, `n`
//! and `u` suffixes) are not read; callers treat `None` as "no usable value".

/// Bytes of a memory quantity.
pub fn memory_bytes(q: &str) -> Option<usize> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        _ => return None,
    };
    (number >= 0.0).then_some((number * factor) as usize)
}

/// Millicores of a CPU quantity (`100m` → 100, `0.5` → 500, `2` → 2000).
pub fn cpu_millicores(q: &str) -> Option<u64> {
    let q = q.trim();
    let cores: f64 = match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => q.parse().ok()?,
    };
    (cores >= 0.0).then_some((cores * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_parse_to_bytes() {
        for (q, want) in
            [("64Mi", Some(64 << 20)), ("1Gi", Some(1 << 30)), ("1000", Some(1000)), ("2k", Some(2000)), ("x", None)]
        {
            assert_eq!(memory_bytes(q), want, "{q}");
        }
    }

    #[test]
    fn cpu_quantities_parse_to_millicores() {
        for (q, want) in
            [("100m", Some(100)), ("0.5", Some(500)), ("2", Some(2000)), ("1500m", Some(1500)), ("lots", None)]
        {
            assert_eq!(cpu_millicores(q), want, "{q}");
        }
    }
}
