//! Reading a configuration file strictly: text only, TOML's own types only, and every
//! refusal one line that names its key and what the key allows.
//!
//! The file must be UTF-8 text (tabs and line ends the only control characters); anything
//! else is refused as "not a text file" and none of its bytes are repeated. TOML is
//! deserialized as written: a string is never read as a number nor a number as a string
//! (`weight = "5"` and `interface = 5` are refused). A type error is located by its key
//! path (`service[0].real_server[1].weight`, through `serde_path_to_error`) and worded as
//! xvsadm words the same mistake where it has words for it (`illegal weight specified`).

use serde::de::DeserializeOwned;

/// Reads `path` as the text of a configuration file; refusals are one line each.
pub fn read_text(path: &std::path::Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    match String::from_utf8(bytes) {
        Ok(text) => {
            check_text(&text)?;
            Ok(text)
        }
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
            Err(format!(
                "not a text file: line {line} holds a byte that is not UTF-8 (0x{:02x})",
                bytes[at]
            ))
        }
    }
}

/// Refuses text with control characters other than tab, line feed and carriage return.
pub fn check_text(text: &str) -> Result<(), String> {
    for (i, line) in text.split('\n').enumerate() {
        if let Some(c) = line
            .chars()
            .find(|&c| c.is_control() && c != '\t' && c != '\r')
        {
            return Err(format!(
                "not a text file: line {} holds the control character U+{:04X}",
                i + 1,
                c as u32
            ));
        }
    }
    Ok(())
}

/// Makes a message safe for a log line: control characters (and other invisible ones)
/// written as `\u{..}` escapes, so no byte of the file reaches a terminal as it was.
pub fn escaped(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Deserializes TOML `text` into `T` strictly; the error is one line naming the key.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| syntax_error(text, &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        type_error(&key, e.inner().message())
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = one_line(e.message());
    match e.span() {
        Some(span) => format!("line {}: {message}", line_of(text, span.start)),
        None => message,
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// xvsadm's words for a key's wrong value, and what the key allows.
fn key_words(key: &str) -> (Option<&'static str>, Option<&'static str>) {
    let last = key.rsplit('.').next().unwrap_or(key);
    let in_real_server = key.contains(".real_server[") && !key.contains(".check");
    let in_service = key.starts_with("service[") && !in_real_server && !key.contains(".check");
    let in_sync_daemon = key.starts_with("sync.master.") || key.starts_with("sync.backup.");
    let in_mark = key.starts_with("mark[");
    match last {
        "mark" if in_mark => (None, Some("a number from 1 to 4294967295")),
        "protocol" if in_mark => (None, Some("a string: tcp or udp")),
        "destination" if in_mark => (
            None,
            Some("a string such as \"192.0.2.10\", \"192.0.2.0/24\" or \"2001:db8::/64\""),
        ),
        l if in_mark && l.starts_with("ports") => (
            None,
            Some("a list of ports and \"FIRST-LAST\" ranges such as [80, 443, \"8000-8100\"]"),
        ),
        "weight" if in_real_server => (
            Some("illegal weight specified"),
            Some("a number from 0 to 65535"),
        ),
        "upper_threshold" if in_real_server => (
            Some("illegal u_threshold specified"),
            Some("a number from 0 to 2147483647"),
        ),
        "lower_threshold" if in_real_server => (
            Some("illegal l_threshold specified"),
            Some("a number from 0 to 2147483647"),
        ),
        "address" if in_real_server => (
            Some("illegal real server address[:port] specified"),
            Some("a string such as \"192.168.40.12\" or \"192.168.40.12:8080\""),
        ),
        "method" if in_real_server => (None, Some("a string: dr, nat or tun")),
        "tcp" | "udp" if in_service => (
            Some("illegal virtual server address[:port] specified"),
            Some("a string such as \"172.16.21.10:80\" or \"[2001:db8::10]:80\""),
        ),
        "fwmark" if in_service => (
            Some("invalid fwmark value specified"),
            Some("a number from 1 to 4294967295"),
        ),
        "persistent" if in_service => (
            Some("invalid timeout value specified"),
            Some("true, false or seconds from 1 to 2678400"),
        ),
        "netmask" if in_service => (
            Some("illegal virtual server persistent mask specified"),
            Some("a string such as \"255.255.255.0\", or an IPv6 prefix length from 1 to 128"),
        ),
        "scheduler" if in_service => (
            None,
            Some("a string: rr wrr lc wlc sed nq lblc lblcr dh sh mh fo ovf twos"),
        ),
        "flags" if in_service => (None, Some("a string such as \"sh-fallback,sh-port\"")),
        "tcp" | "tcpfin" | "udp" if key.starts_with("timeouts.") => (
            Some("invalid timeout value specified"),
            Some("seconds from 1 to 2678400"),
        ),
        "syncid" if in_sync_daemon => (
            Some("illegal syncid specified"),
            Some("a number from 0 to 255"),
        ),
        "maxlen" if in_sync_daemon => (
            Some("illegal sync-maxlen specified"),
            Some("a number from 44 to 65507"),
        ),
        "port" if in_sync_daemon => (
            Some("illegal mcast-port specified"),
            Some("a number from 1 to 65535"),
        ),
        "ttl" if in_sync_daemon => (
            Some("illegal mcast-ttl specified"),
            Some("a number from 1 to 255"),
        ),
        "group" if in_sync_daemon => (
            Some("illegal mcast-group specified"),
            Some("a string such as \"224.0.0.81\""),
        ),
        "interface" | "external" | "internal" => (None, Some("a string: an interface's name")),
        "socket" => (None, Some("a string: the control socket's path")),
        "cores" => (None, Some("a list of core numbers such as [2, 3]")),
        "queues" => (None, Some("a number from 1")),
        "worker_nice" => (None, Some("a nice value from -20 to 19")),
        "conn_table_size" => (
            None,
            Some("a power of two from 256 to 67108864, such as 4096"),
        ),
        _ => (None, None),
    }
}

/// What serde expected, in the file's terms.
fn expected_words(expected: &str) -> String {
    match expected.trim() {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" => {
            "a whole number".to_string()
        }
        "f32" | "f64" => "a number".to_string(),
        "a boolean" | "bool" => "true or false".to_string(),
        "a sequence" => "a list".to_string(),
        "path string" => "a string: a path".to_string(),
        other if other.starts_with("struct ") => "a table".to_string(),
        other => other.to_string(),
    }
}

/// What was found, in the file's terms (`integer 5`, `string "5"`, `a table`).
fn found_words(unexpected: &str) -> String {
    match unexpected.trim() {
        "map" => "a table".to_string(),
        "sequence" => "a list".to_string(),
        other => other.replace('`', ""),
    }
}

/// One line for a deserialization error at `key`.
fn type_error(key: &str, message: &str) -> String {
    let message = one_line(message);
    let (words, allowed) = key_words(key);
    let prefix = match key {
        "." | "" => String::new(),
        key => format!("{key}: "),
    };
    let kinds = ["invalid type: ", "invalid value: "];
    let Some(rest) = kinds.iter().find_map(|k| message.strip_prefix(k)) else {
        // unknown field, missing field, duplicate key and the like: serde's words name it.
        return format!("{prefix}{message}");
    };
    let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let allowed = allowed
        .map(str::to_string)
        .unwrap_or_else(|| expected_words(expected));
    let words = words.map(|w| format!("{w}: ")).unwrap_or_default();
    format!(
        "{prefix}{words}{} is not allowed ({allowed})",
        found_words(found)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_files_are_refused_without_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xvs.toml");
        std::fs::write(&path, b"[daemon]\n\x89PNG\r\n\x1a\n\x1b[31m").unwrap();
        assert_eq!(
            read_text(&path).unwrap_err(),
            "not a text file: line 2 holds a byte that is not UTF-8 (0x89)"
        );
        std::fs::write(&path, "[daemon]\ninterface = \"eth0\"\n\x1b[2J\n").unwrap();
        assert_eq!(
            read_text(&path).unwrap_err(),
            "not a text file: line 3 holds the control character U+001B"
        );
        std::fs::write(&path, "a = 1\r\n\tb = 2\n").unwrap();
        assert!(read_text(&path).is_ok(), "tabs and CRLF are text");
        let missing = read_text(&dir.path().join("nope.toml")).unwrap_err();
        assert!(missing.starts_with("cannot read the file: "), "{missing}");
    }

    #[test]
    fn escaped_writes_control_characters_as_escapes() {
        assert_eq!(escaped("a\u{1b}[2Jb\u{7}"), "a\\u{1b}[2Jb\\u{7}");
        assert_eq!(escaped("plain 'text' é"), "plain 'text' é");
    }
}
