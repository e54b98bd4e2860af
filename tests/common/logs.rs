//! The log lines the exporters of one test binary write, captured in the binary's own logfmt
//! (all tests of a binary share the process: each uses its own integration names).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Installs the capture on first use; every later call returns the same buffer.
pub fn capture() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,aws_cost_exporter=info",
            ))
            .event_format(aws_cost_exporter::logfmt::Logfmt)
            .fmt_fields(aws_cost_exporter::logfmt::Logfmt)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines that mention `integration=<name>`.
pub fn integration_lines(integration: &str) -> Vec<String> {
    let text = String::from_utf8(capture().lock().unwrap().clone()).unwrap();
    let tag = format!("integration={integration}");
    text.lines()
        .filter(|l| l.split(' ').any(|field| field == tag))
        .map(str::to_string)
        .collect()
}
