//! Printing of the one-shot commands (`osgate check`, `osgate rpc`, `osgate modbus`) to stdout.
//!
//! `println!` panics when stdout is a closed pipe (`osgate rpc gateway.status | true`). A
//! reader that stops reading is a normal end of the command, so [`outln!`](crate::outln) ends
//! the process with exit code 0 there instead; any other write error is reported, exit 1.

use std::io::Write as _;

/// Writes `args` and a newline to stdout (see the module docs for a closed pipe).
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.write_all(b"\n")) {
        end_on(e);
    }
}

/// Flushes stdout (see the module docs for a closed pipe).
pub fn flush() {
    if let Err(e) = std::io::stdout().lock().flush() {
        end_on(e);
    }
}

fn end_on(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// `println!` for the one-shot commands: a closed stdout ends the process with exit code 0.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::write_line(format_args!($($arg)*))
    };
}
