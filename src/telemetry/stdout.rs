//! Log lines leave the request path through a shared buffer: a worker appends its finished line
//! under a short lock and goes on, and a background thread writes whatever has gathered to stdout
//! every few milliseconds, in one `write`. Under load that is one system call for hundreds of lines
//! instead of one per line, and no worker waits on stdout or wakes another thread. No line is
//! dropped: past [`HIGH_WATER`] bytes (stdout slow or blocked) the worker that crosses it writes the
//! buffer out itself and waits, as it would have waited on a direct write. Lines reach stdout at
//! most [`INTERVAL`] late; the guard returned with the writer writes out the rest at exit.

use std::{
    io::{self, Write},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How often the background thread writes out what has gathered.
pub const INTERVAL: Duration = Duration::from_millis(20);
/// Bytes gathered at most before a worker writes them out itself.
pub const HIGH_WATER: usize = 1024 * 1024;

struct Shared<W> {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// The output, held while a batch is taken and written, so batches leave in order.
    out: Mutex<W>,
}

impl<W: Write> Shared<W> {
    fn write_out(&self) {
        let mut out = lock(&self.out);
        let batch = std::mem::take(&mut *lock(&self.pending));
        if !batch.is_empty() {
            // Errors (stdout closed) are ignored: logging must never stop the service.
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `MakeWriter` for the binaries' log output.
pub struct Batched<W: Write + Send + 'static>(Arc<Shared<W>>);

pub type BatchedStdout = Batched<io::Stdout>;

impl<W: Write + Send + 'static> Clone for Batched<W> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// Writes out what is pending when dropped: keep it alive until the process is about to exit.
#[must_use = "dropping the guard is what writes out the last lines"]
pub struct FlushOnDrop<W: Write + Send + 'static>(Arc<Shared<W>>);

impl<W: Write + Send + 'static> Drop for FlushOnDrop<W> {
    fn drop(&mut self) {
        self.0.write_out();
    }
}

/// Starts the background writer for stdout.
pub fn batched_stdout() -> io::Result<(BatchedStdout, FlushOnDrop<io::Stdout>)> {
    batched(io::stdout(), INTERVAL)
}

fn batched<W: Write + Send + 'static>(
    out: W,
    interval: Duration,
) -> io::Result<(Batched<W>, FlushOnDrop<W>)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(64 * 1024)),
        out: Mutex::new(out),
    });
    let background = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                background.write_out();
            }
        })?;
    Ok((Batched(Arc::clone(&shared)), FlushOnDrop(shared)))
}

/// Appends what the formatter writes. tracing-subscriber formats a whole event first and hands it
/// over in one `write_all`, so lines from different threads never interleave.
pub struct Append<'a, W: Write + Send + 'static>(&'a Shared<W>);

impl<W: Write + Send + 'static> Write for Append<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let full = {
            let mut pending = lock(&self.0.pending);
            pending.extend_from_slice(bytes);
            pending.len() >= HIGH_WATER
        };
        if full {
            self.0.write_out();
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for Batched<W> {
    type Writer = Append<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Append(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` it gets.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            lock(&self.0).push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(n: usize) -> String {
        (0..n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn lines_gather_into_one_write_and_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone(), Duration::from_secs(3600)).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        writer
                            .make_writer()
                            .write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(
            lock(&sink.0).is_empty(),
            "nothing is written before the interval"
        );
        drop(guard);
        let writes = lock(&sink.0).clone();
        assert_eq!(writes.len(), 1, "1000 lines, one write");
        let text = String::from_utf8(writes.concat()).unwrap();
        assert_eq!(text.lines().count(), 1000);
        for t in 0..4 {
            // Each thread's lines arrive whole and in its order.
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..250).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(mine, expected);
        }
    }

    #[test]
    fn the_background_thread_writes_within_the_interval() {
        let sink = Sink::default();
        let (writer, _guard) = batched(sink.clone(), Duration::from_millis(5)).unwrap();
        writer.make_writer().write_all(lines(3).as_bytes()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lock(&sink.0).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(lock(&sink.0).concat(), lines(3).into_bytes());
    }

    #[test]
    fn past_the_high_water_mark_the_writer_writes_itself() {
        let sink = Sink::default();
        let (writer, _guard) = batched(sink.clone(), Duration::from_secs(3600)).unwrap();
        let line = "x".repeat(1023) + "\n";
        for _ in 0..HIGH_WATER / 1024 {
            writer.make_writer().write_all(line.as_bytes()).unwrap();
        }
        let writes = lock(&sink.0).clone();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].len(), HIGH_WATER);
    }
}
