//! `--sink TARGET[;OPTION=VALUE...]`, parsed into a checked configuration.
//! Every error names the sink and the option, and lists what is accepted.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};

use super::super::formats::Format;

#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// The spec as given, minus secrets (token=).
    pub display: String,
    pub target: Target,
    pub format: Format,
    /// Kind globs (`classification`, `network.*`); empty: every kind.
    pub kinds: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Target {
    Stdout,
    File(FileOptions),
    Syslog(SyslogOptions),
    Http(HttpOptions),
}

#[derive(Debug, Clone)]
pub struct FileOptions {
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes.
    pub rotate_size: Option<u64>,
    /// Rotate when the file is this old.
    pub rotate_every: Option<Duration>,
    /// Rotated files kept; older ones are removed.
    pub keep: usize,
    /// gzip rotated files.
    pub compress: bool,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp(String),
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct SyslogOptions {
    pub transport: SyslogTransport,
    pub facility: u8,
    pub app_name: String,
    /// Largest message sent; larger records are dropped and counted.
    pub max_message: usize,
    /// Messages held in memory while the receiver is slow or away.
    pub queue: usize,
    /// And at most this many bytes of them: records are KBs each, and a
    /// receiver that accepts and never reads must not fill the host's memory.
    pub queue_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpShape {
    /// One JSON record per line (Vector, Logstash, Fluent Bit http inputs).
    Ndjson,
    /// Splunk HTTP Event Collector: `{"time":…,"event":{…}}` objects.
    SplunkHec,
    /// Elasticsearch/OpenSearch `_bulk` create actions.
    EsBulk,
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub url: String,
    pub shape: HttpShape,
    /// Sent as `Authorization: Splunk T` (HEC), `ApiKey T` (_bulk) or `Bearer T`.
    pub token: Option<String>,
    pub index: Option<String>,
    pub sourcetype: Option<String>,
    pub batch_records: usize,
    pub batch_bytes: usize,
    /// A batch is sent at most this long after its first record.
    pub batch_age: Duration,
    pub spool_dir: PathBuf,
    pub spool_max: u64,
    pub timeout: Duration,
    /// PEM certificates to trust instead of the built-in web roots (a
    /// receiver with a private CA or a self-signed certificate).
    pub ca_file: Option<PathBuf>,
}

const COMMON: &[&str] = &["format", "kinds"];
const FILE_OPTIONS: &[&str] = &["rotate_size", "rotate_every", "keep", "compress", "mode"];
const SYSLOG_OPTIONS: &[&str] = &["facility", "app_name", "max_message", "queue", "queue_bytes"];
const HTTP_OPTIONS: &[&str] = &[
    "shape",
    "token",
    "token_file",
    "index",
    "sourcetype",
    "batch_records",
    "batch_bytes",
    "batch_age",
    "spool",
    "spool_max",
    "timeout",
    "ca_file",
];

const FACILITIES: &[&str] = &[
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// Parses `64MiB`, `100M`, `512k`, `1GiB`, or plain bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => bail!("`{s}` is not a size like 64MiB, 512k or 1G"),
    };
    let value: f64 = num.parse().map_err(|_| anyhow!("`{s}` is not a size like 64MiB, 512k or 1G"))?;
    if !value.is_finite() || value < 0.0 {
        bail!("`{s}` is not a size like 64MiB, 512k or 1G");
    }
    Ok((value * scale as f64) as u64)
}

fn parse_bool(s: &str) -> Result<bool> {
    match s {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => bail!("`{s}` is not true or false"),
    }
}

fn parse_number(s: &str) -> Result<usize> {
    s.parse().map_err(|_| anyhow!("`{s}` is not a whole number"))
}

fn parse_duration(s: &str) -> Result<Duration> {
    crate::cli::parse_duration(s).map_err(|e| anyhow!(e))
}

fn parse_period(s: &str) -> Result<Duration> {
    crate::cli::parse_period(s).map_err(|e| anyhow!(e))
}

/// Where a HTTP sink spools by default: one folder per endpoint.
fn default_spool(url: &str) -> PathBuf {
    let url = hide_password(url);
    let name: String =
        url.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
    PathBuf::from("/var/lib/tracer/spool").join(name)
}

impl SinkSpec {
    /// `default_format`: from `--format`, for sinks that name none.
    /// `-o PATH`: just that file, taken as a path (a `;` in it is part of
    /// the name, not options), mode 0600, no rotation.
    pub fn file(path: PathBuf, format: Format) -> Self {
        Self {
            display: path.display().to_string(),
            target: Target::File(FileOptions {
                path,
                rotate_size: None,
                rotate_every: None,
                keep: 10,
                compress: true,
                mode: 0o600,
            }),
            format,
            kinds: Vec::new(),
        }
    }

    pub fn parse(spec: &str, default_format: Format) -> Result<Self> {
        Self::parse_inner(spec, default_format).with_context(|| format!("--sink {}", redact(spec)))
    }

    fn parse_inner(spec: &str, default_format: Format) -> Result<Self> {
        let mut parts = spec.split(';');
        let target = parts.next().unwrap_or_default().trim();
        let mut options: Vec<(String, String)> = Vec::new();
        for part in parts.filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("option `{part}` is not KEY=VALUE (options are separated by `;`)"))?;
            options.push((k.trim().to_string(), v.trim().to_string()));
        }
        let (kind, allowed): (&str, &[&str]) = if target == "-" || target == "stdout" {
            ("stdout", &[])
        } else if target.starts_with("syslog+") {
            ("syslog", SYSLOG_OPTIONS)
        } else if target.starts_with("http://") || target.starts_with("https://") {
            ("http", HTTP_OPTIONS)
        } else if target.starts_with("file:") || target.starts_with('/') || target.starts_with('.') {
            ("file", FILE_OPTIONS)
        } else {
            bail!(
                "unknown target `{target}`: use a file path (file:PATH, /abs or ./rel), `-` for stdout, \
                 syslog+udp://HOST:PORT, syslog+tcp://HOST:PORT, syslog+unix:///dev/log, or an \
                 http(s):// URL"
            );
        };
        for (k, _) in &options {
            if !COMMON.contains(&k.as_str()) && !allowed.contains(&k.as_str()) {
                let mut valid: Vec<&str> = COMMON.iter().chain(allowed).copied().collect();
                valid.sort_unstable();
                bail!("{kind} sinks have no option `{k}` (options: {})", valid.join(", "));
            }
        }
        let get = |k: &str| options.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let with = |k: &'static str| move |e: anyhow::Error| e.context(format!("option {k}"));
        let format = match get("format") {
            Some(f) => f.parse().map_err(|e: String| anyhow!(e)).map_err(with("format"))?,
            None => default_format,
        };
        let kinds: Vec<String> = get("kinds")
            .map(|k| k.split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect())
            .unwrap_or_default();

        let target = match kind {
            "stdout" => Target::Stdout,
            "file" => {
                let path = PathBuf::from(target.strip_prefix("file:").unwrap_or(target));
                if path.as_os_str().is_empty() {
                    bail!("file sinks need a path");
                }
                let rotate_size =
                    get("rotate_size").map(parse_size).transpose().map_err(with("rotate_size"))?;
                let rotate_every =
                    get("rotate_every").map(parse_duration).transpose().map_err(with("rotate_every"))?;
                if rotate_size == Some(0) || rotate_every == Some(Duration::ZERO) {
                    bail!("rotate_size and rotate_every must be more than zero");
                }
                let mode = match get("mode") {
                    Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                        .map_err(|_| anyhow!("`{m}` is not an octal mode like 0600"))?,
                    None => 0o600,
                };
                Target::File(FileOptions {
                    path,
                    rotate_size,
                    rotate_every,
                    keep: get("keep").map(parse_number).transpose().map_err(with("keep"))?.unwrap_or(10),
                    compress: get("compress")
                        .map(parse_bool)
                        .transpose()
                        .map_err(with("compress"))?
                        .unwrap_or(true),
                    mode,
                })
            }
            "syslog" => {
                let rest = &target["syslog+".len()..];
                let transport = if let Some(addr) = rest.strip_prefix("udp://") {
                    SyslogTransport::Udp(addr.to_string())
                } else if let Some(addr) = rest.strip_prefix("tcp://") {
                    SyslogTransport::Tcp(addr.to_string())
                } else if let Some(path) = rest.strip_prefix("unix://") {
                    SyslogTransport::Unix(PathBuf::from(path))
                } else {
                    bail!("syslog transport must be syslog+udp://, syslog+tcp:// or syslog+unix://");
                };
                let facility = match get("facility") {
                    Some(f) => FACILITIES.iter().position(|n| *n == f).ok_or_else(|| {
                        anyhow!("option facility: `{f}` is not one of {}", FACILITIES.join(", "))
                    })? as u8,
                    None => 16, // local0
                };
                let app_name = get("app_name").unwrap_or("tracer").to_string();
                if app_name.is_empty()
                    || app_name.len() > 48
                    || !app_name.bytes().all(|b| (33..=126).contains(&b))
                {
                    bail!("option app_name: 1 to 48 printable ASCII characters, no spaces (RFC 5424)");
                }
                let udp_limit = 65_507;
                let max_message =
                    get("max_message").map(parse_size).transpose().map_err(with("max_message"))?.map_or(
                        if matches!(transport, SyslogTransport::Tcp(_)) { 1 << 20 } else { udp_limit },
                        |m| m as usize,
                    );
                if matches!(transport, SyslogTransport::Udp(_)) && max_message > udp_limit {
                    bail!("option max_message: a UDP datagram holds at most {udp_limit} bytes");
                }
                Target::Syslog(SyslogOptions {
                    transport,
                    facility,
                    app_name,
                    max_message,
                    queue: get("queue")
                        .map(parse_number)
                        .transpose()
                        .map_err(with("queue"))?
                        .unwrap_or(100_000),
                    queue_bytes: get("queue_bytes")
                        .map(parse_size)
                        .transpose()
                        .map_err(with("queue_bytes"))?
                        .unwrap_or(64 << 20),
                })
            }
            _ => {
                let shape = match get("shape").unwrap_or("ndjson") {
                    "ndjson" => HttpShape::Ndjson,
                    "splunk-hec" | "hec" => HttpShape::SplunkHec,
                    "es-bulk" | "elasticsearch" | "bulk" => HttpShape::EsBulk,
                    s => bail!("option shape: `{s}` is not one of ndjson, splunk-hec, es-bulk"),
                };
                let token = match (get("token"), get("token_file")) {
                    (Some(t), _) => Some(t.to_string()),
                    (None, Some(f)) => Some(read_token(f)?),
                    (None, None) => None,
                };
                Target::Http(HttpOptions {
                    url: target.to_string(),
                    shape,
                    token,
                    index: get("index").map(String::from),
                    sourcetype: get("sourcetype").map(String::from),
                    batch_records: get("batch_records")
                        .map(parse_number)
                        .transpose()
                        .map_err(with("batch_records"))?
                        .unwrap_or(500)
                        .max(1),
                    batch_bytes: get("batch_bytes")
                        .map(parse_size)
                        .transpose()
                        .map_err(with("batch_bytes"))?
                        .map_or(1 << 20, |b| b as usize)
                        .max(1),
                    batch_age: get("batch_age")
                        .map(parse_duration)
                        .transpose()
                        .map_err(with("batch_age"))?
                        .unwrap_or(Duration::from_secs(1)),
                    spool_dir: get("spool").map_or_else(|| default_spool(target), PathBuf::from),
                    spool_max: get("spool_max")
                        .map(parse_size)
                        .transpose()
                        .map_err(with("spool_max"))?
                        .unwrap_or(256 << 20),
                    // A zero timeout would fail every request.
                    timeout: get("timeout")
                        .map(parse_period)
                        .transpose()
                        .map_err(with("timeout"))?
                        .unwrap_or(Duration::from_secs(10)),
                    ca_file: get("ca_file").map(PathBuf::from),
                })
            }
        };
        Ok(Self { display: redact(spec), target, format, kinds })
    }
}

/// The spec with secrets hidden (health records and errors show it): a
/// token value, and the password of a URL's `user:password@`.
fn redact(spec: &str) -> String {
    spec.split(';')
        .enumerate()
        .map(|(i, p)| match p.split_once('=') {
            Some((k, _)) if i > 0 && k.trim() == "token" => "token=***".to_string(),
            _ if i == 0 => hide_password(p),
            _ => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// A command-line argument with its secrets hidden, for the capture header:
/// the values of `token=`-like options and URL passwords.
pub fn redact_arg(arg: &str) -> String {
    // Passwords first: a URL's authority ends at `/`, `?`, `#`, `;` or a space.
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail.find(['/', '?', '#', ';', ' ']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                out.push_str(&format!("{user}:***@{host}"));
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    // Then values of keys such as `token=`, `access_token=`, `password=`,
    // up to the next `;`, `&` or space.
    let text = out;
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(eq) = rest.find('=') {
        let (head, tail) = (&rest[..=eq], &rest[eq + 1..]);
        out.push_str(head);
        let key = head[..eq]
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let end = tail.find([';', '&', ' ']).unwrap_or(tail.len());
        let secret = ["token", "password", "passwd", "secret", "apikey", "api_key"];
        if end > 0 && secret.iter().any(|s| key.ends_with(s)) {
            out.push_str("***");
            rest = &tail[end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// `scheme://user:***@host...`: a URL as records and errors may show it.
pub fn hide_password(target: &str) -> String {
    let Some((scheme, rest)) = target.split_once("://") else { return target.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => target.to_string(),
    }
}

/// A token from a file, read up to 64 KiB (`token_file=/dev/zero` must
/// not exhaust memory).
fn read_token(path: &str) -> Result<String> {
    use std::io::Read as _;
    const MAX: u64 = 64 * 1024;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX + 1).read_to_string(&mut text))
        .with_context(|| format!("option token_file: reading {path}"))?;
    if text.len() as u64 > MAX {
        bail!("option token_file: {path} is larger than 64 KiB, not a token");
    }
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_path_is_only_a_path() {
        let spec = SinkSpec::file(PathBuf::from("x;mode=0644"), Format::Native);
        let Target::File(f) = spec.target else { panic!("a file sink") };
        assert_eq!(f.path, PathBuf::from("x;mode=0644"));
        assert_eq!(f.mode, 0o600);
        assert!(f.rotate_size.is_none());
    }

    fn parse(s: &str) -> Result<SinkSpec> {
        SinkSpec::parse(s, Format::Native)
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("100M").unwrap(), 100 << 20);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1T").is_err());
    }

    #[test]
    fn targets_and_options() {
        let s = parse("/var/log/t.jsonl;rotate_size=64MiB;rotate_every=1h;keep=3;compress=false").unwrap();
        let Target::File(f) = s.target else { panic!() };
        assert_eq!(
            (f.rotate_size, f.rotate_every, f.keep, f.compress, f.mode),
            (Some(64 << 20), Some(Duration::from_secs(3600)), 3, false, 0o600)
        );
        let s = parse("syslog+tcp://127.0.0.1:514;format=ecs;kinds=classification,network.*;facility=daemon")
            .unwrap();
        assert_eq!(s.format, Format::Ecs);
        assert_eq!(s.kinds, ["classification", "network.*"]);
        let Target::Syslog(o) = s.target else { panic!() };
        assert_eq!(
            (o.transport, o.facility, o.app_name.as_str()),
            (SyslogTransport::Tcp("127.0.0.1:514".into()), 3, "tracer")
        );
        let s = parse("https://splunk:8088/services/collector/event;shape=splunk-hec;token=s3cret").unwrap();
        assert_eq!(s.display, "https://splunk:8088/services/collector/event;shape=splunk-hec;token=***");
        let Target::Http(h) = s.target else { panic!() };
        assert_eq!((h.shape, h.token.as_deref()), (HttpShape::SplunkHec, Some("s3cret")));
        assert!(matches!(parse("-").unwrap().target, Target::Stdout));
        let s = parse("https://elastic:pw@es:9200/_bulk;shape=es-bulk").unwrap();
        assert_eq!(s.display, "https://elastic:***@es:9200/_bulk;shape=es-bulk");
        let Target::Http(h) = s.target else { panic!() };
        assert!(!h.spool_dir.to_string_lossy().contains("pw"), "{}", h.spool_dir.display());
    }

    #[test]
    fn arguments_lose_their_secrets() {
        assert_eq!(redact_arg("http://h/;token=abc;shape=ndjson"), "http://h/;token=***;shape=ndjson");
        assert_eq!(
            redact_arg("--sink=https://elastic:s3cret@es:9200/_bulk;shape=es-bulk"),
            "--sink=https://elastic:***@es:9200/_bulk;shape=es-bulk"
        );
        assert_eq!(redact_arg("https://u:pw@h;token=t0k"), "https://u:***@h;token=***");
        assert_eq!(
            redact_arg("https://es/x?access_token=abc&pretty"),
            "https://es/x?access_token=***&pretty"
        );
        assert_eq!(redact_arg("syslog+tcp://u:pw@h:514"), "syslog+tcp://u:***@h:514");
        assert_eq!(redact_arg("--token=abc"), "--token=***");
        assert_eq!(redact_arg("a://b:c@d e://f:g@h/"), "a://b:***@d e://f:***@h/");
        for plain in [
            "record",
            "-o",
            "/tmp/c.jsonl",
            "--duration",
            "http://h/a@b:c",
            "http://user@h/",
            "token_file=/etc/tracer/token",
            "token=",
            "://@",
            "zażółć=ä",
        ] {
            assert_eq!(redact_arg(plain), plain);
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = format!("{:#}", parse("/tmp/x;rotate=1").unwrap_err());
        assert!(e.contains("no option `rotate`") && e.contains("rotate_size"), "{e}");
        let e = format!("{:#}", parse("kafka://x").unwrap_err());
        assert!(e.contains("unknown target"), "{e}");
        let e = format!("{:#}", parse("syslog+udp://h:514;facility=mars").unwrap_err());
        assert!(e.contains("local0"), "{e}");
        let e = format!("{:#}", parse("/tmp/x;format=cef").unwrap_err());
        assert!(e.contains("native"), "{e}");
        let e = format!("{:#}", parse("http://h/;token=abc;shape=xml").unwrap_err());
        assert!(e.contains("token=***") && !e.contains("abc"), "{e}");
        assert!(parse("syslog+udp://h:514;max_message=70000").is_err());
        assert!(parse("/tmp/x;keep").is_err());
    }

    #[test]
    fn absurd_or_zero_durations_are_errors() {
        for spec in [
            "/tmp/x;rotate_every=1e20",
            "/tmp/x;rotate_every=0",
            "http://h/;batch_age=1e20",
            "http://h/;timeout=1e20s",
            "http://h/;timeout=0",
        ] {
            let e = format!("{:#}", parse(spec).unwrap_err());
            assert!(e.contains("option") || e.contains("more than zero"), "{spec}: {e}");
        }
        // No batching delay at all is a valid choice.
        let Target::Http(h) = parse("http://h/;batch_age=0").unwrap().target else { panic!() };
        assert_eq!(h.batch_age, Duration::ZERO);
    }
}
