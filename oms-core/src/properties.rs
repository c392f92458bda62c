//! The text format of Kafka client properties, shared by the operator and the runtime.
//!
//! An OrderSystem's `kafka.secretRef` names a Secret whose key `kafka.properties` holds
//! librdkafka properties; the operator reads it to manage topics, and hands the same text to the
//! pods as `OMS_KAFKA_PROPERTIES`. Both parse it here, so they can never disagree.
//!
//! # Format
//! One `key=value` per line; blank lines and lines starting with `#` are ignored; keys and
//! values are trimmed. A single line (the `--kafka-property a=1,b=2` form) may hold several
//! pairs separated by commas. In a text of several lines commas belong to the values, so a
//! password may contain one.
//!
//! # Secrecy
//! Values are often passwords: errors name the line and the key, never a value or the line's
//! text.

/// Why a properties text cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PropertiesError {
    /// An entry without `=`, or with nothing before it.
    #[error("kafka properties, line {line}: expected key=value")]
    NotKeyValue {
        /// 1-based line (or comma-separated entry of a single line).
        line: usize,
    },
    /// The same key twice.
    #[error("kafka properties, line {line}: {key} is set twice")]
    Duplicate {
        /// 1-based line.
        line: usize,
        /// The key.
        key: String,
    },
}

/// Parses a properties text into `(key, value)` pairs, in order.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, PropertiesError> {
    let lines: Vec<&str> = text.lines().collect();
    let entries: Vec<&str> = match lines.as_slice() {
        [single] => single.split(',').collect(),
        _ => lines,
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let line = index + 1;
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let (key, value) = entry
            .split_once('=')
            .map(|(key, value)| (key.trim(), value.trim()))
            .filter(|(key, _)| !key.is_empty())
            .ok_or(PropertiesError::NotKeyValue { line })?;
        if pairs.iter().any(|(existing, _)| existing == key) {
            return Err(PropertiesError::Duplicate {
                line,
                key: key.to_string(),
            });
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lines_commas_comments_and_blanks() {
        let text = "# MSK\nsecurity.protocol=SASL_SSL\n\n  sasl.mechanisms = SCRAM-SHA-512 \nsasl.password=a,b=c\n";
        assert_eq!(
            parse_properties(text).unwrap(),
            pairs(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.password", "a,b=c"),
            ])
        );
        assert_eq!(
            parse_properties("client.id=x,linger.ms=5").unwrap(),
            pairs(&[("client.id", "x"), ("linger.ms", "5")])
        );
        assert_eq!(parse_properties("").unwrap(), pairs(&[]));
        assert_eq!(parse_properties("\n\n").unwrap(), pairs(&[]));
    }

    #[test]
    fn errors_name_the_line_but_never_the_value() {
        let error = parse_properties("a=1\nsecret-without-equals\n").unwrap_err();
        assert_eq!(error, PropertiesError::NotKeyValue { line: 2 });
        assert!(!error.to_string().contains("secret"));
        assert_eq!(
            parse_properties("=value").unwrap_err(),
            PropertiesError::NotKeyValue { line: 1 }
        );
        let error = parse_properties("sasl.password=hunter2\nsasl.password=hunter3").unwrap_err();
        assert_eq!(
            error.to_string(),
            "kafka properties, line 2: sasl.password is set twice"
        );
    }
}
