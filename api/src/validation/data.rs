//! ConfigMaps and Secrets: their keys become file names when mounted, so each must be a config key
//! (`[-._a-zA-Z0-9]+`, not `.`/`..`), and the whole payload must fit in 1 MiB.

use serde_json::{Map, Value};

use super::Cause;
use super::names::config_key_errors;

/// Largest payload of a ConfigMap or Secret (Kubernetes' `MaxSecretSize`).
pub(crate) const DATA_MAX_BYTES: usize = 1024 * 1024;

/// How a map's values are written, which decides how many bytes they weigh.
#[derive(Clone, Copy)]
enum Encoding {
    Text,
    Base64,
}

pub(super) fn validate_config_map(object: &Value, causes: &mut Vec<Cause>) {
    let data = object.get("data").and_then(Value::as_object);
    let binary = object.get("binaryData").and_then(Value::as_object);
    let mut total = check_keys(data, "data", Encoding::Text, causes);
    total += check_keys(binary, "binaryData", Encoding::Base64, causes);
    if let (Some(data), Some(binary)) = (data, binary) {
        for key in data.keys().filter(|k| binary.contains_key(*k)) {
            let message = "duplicate of key present in binaryData";
            causes.push(Cause::invalid(format!("data[{key}]"), &Value::from(key.as_str()), message));
        }
    }
    if total > DATA_MAX_BYTES {
        // An empty path: the error is about the object as a whole, as in Kubernetes.
        causes.push(Cause::too_long("", DATA_MAX_BYTES));
    }
}

/// `stringData` is write-only sugar for `data`; its keys are reported under their own name so
/// the user finds the one they wrote.
pub(super) fn validate_secret(object: &Value, causes: &mut Vec<Cause>) {
    let data = object.get("data").and_then(Value::as_object);
    let string_data = object.get("stringData").and_then(Value::as_object);
    let total = check_keys(data, "data", Encoding::Base64, causes)
        + check_keys(string_data, "stringData", Encoding::Text, causes);
    if total > DATA_MAX_BYTES {
        causes.push(Cause::too_long("data", DATA_MAX_BYTES));
    }
}

/// Checks every key of the map called `name` and returns its payload size in decoded bytes.
fn check_keys(map: Option<&Map<String, Value>>, name: &str, encoding: Encoding, causes: &mut Vec<Cause>) -> usize {
    let mut total = 0;
    for (key, value) in map.into_iter().flatten() {
        let path = format!("{name}[{key}]");
        let key_value = Value::from(key.as_str());
        causes.extend(config_key_errors(key).iter().map(|m| Cause::invalid(&path, &key_value, m)));
        let len = value.as_str().map_or(0, str::len);
        total += match encoding {
            Encoding::Text => len,
            Encoding::Base64 => len / 4 * 3,
        };
    }
    total
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(object: Value, secret: bool) -> Vec<String> {
        let mut causes = Vec::new();
        if secret {
            validate_secret(&object, &mut causes);
        } else {
            validate_config_map(&object, &mut causes);
        }
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn config_map_keys_must_be_file_names_and_unique_across_data_and_binary_data() {
        // (config map, expected causes)
        for (object, want) in [
            (json!({"data": {"app.properties": "a=1", "KEY_1": ""}, "binaryData": {"logo.png": "AAAA"}}), vec![]),
            (
                json!({"data": {"a/b": "x"}}),
                vec![
                    r#"data[a/b]: Invalid value: "a/b": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"#,
                ],
            ),
            (json!({"binaryData": {"..": "AAAA"}}), vec![r#"binaryData[..]: Invalid value: "..": must not be '..'"#]),
            (
                json!({"data": {"k": "x"}, "binaryData": {"k": "AAAA"}}),
                vec![r#"data[k]: Invalid value: "k": duplicate of key present in binaryData"#],
            ),
            (
                json!({"data": {"big": "x".repeat(DATA_MAX_BYTES + 1)}}),
                vec![": Too long: may not be more than 1048576 bytes"],
            ),
        ] {
            assert_eq!(
                check(object.clone(), false),
                want,
                "{}",
                object.to_string().chars().take(80).collect::<String>()
            );
        }
    }

    #[test]
    fn secret_keys_are_checked_in_data_and_string_data() {
        assert_eq!(
            check(json!({"data": {"tls.crt": "AAAA"}, "stringData": {"password": "p"}}), true),
            Vec::<String>::new()
        );
        let causes = check(json!({"stringData": {"a b": "p"}}), true);
        assert_eq!(causes.len(), 1);
        assert!(causes[0].starts_with("stringData[a b]: Invalid value: \"a b\""), "{causes:?}");
        // 1 MiB of base64 decodes to 768 KiB: within the limit.
        assert!(check(json!({"data": {"big": "A".repeat(DATA_MAX_BYTES)}}), true).is_empty());
    }
}
