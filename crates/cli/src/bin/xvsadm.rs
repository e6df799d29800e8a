//! `xvsadm`: ipvsadm's language and output for xvs.
//!
//! Every ipvsadm 1.31 command line works with only the program name changed. The command
//! is parsed here ([`xvs_cli::ipvsadm`]), sent to the daemon over its control socket
//! ([`xvs_cli::control`]) and the answer printed in ipvsadm's formats
//! ([`xvs_cli::listing`]). Three options are xvsadm's own: `--socket PATH` (else the
//! environment variable `XVS_SOCKET`, else /run/xvs/xvs.sock) and `--json`, which prints a
//! listing's data as JSON instead of text. `--dataplane` lists xvs's own view: each AF_XDP
//! port with its mode (copy or zero-copy, native or generic XDP), the frames the workers
//! received and sent, and every non-zero drop counter by reason. Errors are one line on stderr and change
//! nothing; the exit status is ipvsadm's (2 for a refused command line, 255 for a refused
//! operation, 1 for a listing of a missing service).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use xvs_cli::control::{self, Reply, Request};
use xvs_cli::director::ListRequest;
use xvs_cli::ipvsadm::{self, Command, ListCommand, ListWhat, ParseError};
use xvs_cli::listing::{self, ListData, ListFormat};
use xvs_cli::names::Names;

const PROGRAM: &str = "xvsadm";

/// A failure to report: the line and the exit status.
struct Failure {
    message: String,
    code: u8,
}

impl From<ParseError> for Failure {
    fn from(e: ParseError) -> Self {
        Failure {
            message: e.message,
            code: u8::try_from(e.exit_code).unwrap_or(255),
        }
    }
}

fn failure(message: impl Into<String>, code: u8) -> Failure {
    Failure {
        message: message.into(),
        code,
    }
}

/// xvsadm's own options, taken out before ipvsadm's parser sees the line.
struct Own {
    socket: Option<PathBuf>,
    json: bool,
    dataplane: bool,
    rest: Vec<String>,
}

fn own_options(args: Vec<String>) -> Result<Own, Failure> {
    let mut own = Own {
        socket: None,
        json: false,
        dataplane: false,
        rest: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--json" {
            own.json = true;
        } else if a == "--dataplane" {
            own.dataplane = true;
        } else if a == "--socket" {
            let path = it
                .next()
                .ok_or_else(|| failure("--socket: missing argument", 255))?;
            own.socket = Some(PathBuf::from(path));
        } else if let Some(path) = a.strip_prefix("--socket=") {
            own.socket = Some(PathBuf::from(path));
        } else {
            own.rest.push(a);
        }
    }
    Ok(own)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut stdout = std::io::stdout().lock();
    match run(args, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = stdout.flush();
            eprintln!("{}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(args: Vec<String>, out: &mut impl Write) -> Result<(), Failure> {
    let own = own_options(args)?;
    let names = Names::system();
    if own.dataplane {
        return dataplane(&own, out);
    }
    // ipvsadm with no arguments lists the table.
    let command = if own.rest.is_empty() {
        Command::List(ListCommand {
            what: ListWhat::All,
            format: ListFormat::default(),
        })
    } else {
        ipvsadm::parse(&own.rest, PROGRAM, &names)?
    };
    let socket = control::socket_path(own.socket.as_deref(), None);
    let ask = |request: Request| -> Result<Reply, Failure> {
        control::request(&socket, &request).map_err(|e| failure(e.to_string(), 2))
    };
    let write = |out: &mut dyn Write, text: &str| -> Result<(), Failure> {
        out.write_all(text.as_bytes())
            .map_err(|e| failure(format!("{PROGRAM}: {e}"), 1))
    };
    match command {
        Command::Help => write(out, &ipvsadm::usage(PROGRAM)),
        Command::Version => write(out, &ipvsadm::version_line()),
        Command::Edit(edit) => done(ask(Request::Apply { edits: vec![edit] })?),
        Command::SetTimeouts(timeouts) => done(ask(Request::SetTimeouts { timeouts })?),
        Command::Zero { service } => done(ask(Request::Zero { service })?),
        Command::StartDaemon { role, args } => done(ask(Request::StartDaemon { role, args })?),
        Command::StopDaemon { role } => done(ask(Request::StopDaemon { role })?),
        Command::Restore => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| failure(format!("{PROGRAM}: reading stdin: {e}"), 1))?;
            let restore = ipvsadm::parse_restore(&input, PROGRAM, &names)?;
            if !restore.edits.is_empty() {
                match ask(Request::Apply {
                    edits: restore.edits,
                })? {
                    Reply::Failed {
                        message,
                        index: Some(i),
                    } => {
                        let line = restore.lines.get(i).copied().unwrap_or(0);
                        return Err(failure(format!("line {line}: {message}"), 255));
                    }
                    other => done(other)?,
                }
            }
            if let Some(timeouts) = restore.timeouts {
                done(ask(Request::SetTimeouts { timeouts })?)?;
            }
            Ok(())
        }
        Command::Save { numeric } => {
            let mut data = listed(ask(Request::List {
                what: ListRequest::Services,
            })?)?;
            if own.json {
                listing::sort(&mut data.services);
                return write(out, &json(&data)?);
            }
            write(out, &listing::render_save(&data, numeric, &names))
        }
        Command::List(list) => {
            let what = match list.what {
                ListWhat::All => ListRequest::Services,
                ListWhat::Service(addr) => ListRequest::Service { addr },
                ListWhat::Connections => ListRequest::Connections,
                ListWhat::Timeouts => ListRequest::Timeouts,
                ListWhat::Daemon => ListRequest::Daemon,
            };
            let reply = ask(Request::List { what })?;
            let mut data = match (reply, list.what) {
                // ipvsadm's list_service exits 1 when the service is missing.
                (Reply::Failed { message, .. }, ListWhat::Service(_)) => {
                    return Err(failure(message, 1));
                }
                (reply, _) => listed(reply)?,
            };
            if own.json {
                if list.what == ListWhat::Daemon {
                    return write(out, &json(&data.sync.unwrap_or_default())?);
                }
                if !list.format.nosort {
                    listing::sort(&mut data.services);
                }
                return write(out, &json(&data)?);
            }
            write(out, &render(&data, &list, &names))
        }
    }
}

/// `xvsadm --dataplane [--json]`.
fn dataplane(own: &Own, out: &mut impl Write) -> Result<(), Failure> {
    if !own.rest.is_empty() {
        return Err(failure(
            "--dataplane takes no other option but --json and --socket",
            2,
        ));
    }
    let socket = control::socket_path(own.socket.as_deref(), None);
    let reply = control::request(
        &socket,
        &Request::List {
            what: ListRequest::Dataplane,
        },
    )
    .map_err(|e| failure(e.to_string(), 2))?;
    let data = listed(reply)?;
    let Some(info) = data.dataplane else {
        return Err(failure("xvs runs without a dataplane (--control-only)", 1));
    };
    let text = if own.json {
        #[derive(serde::Serialize)]
        struct Both<'a> {
            #[serde(flatten)]
            dataplane: &'a listing::DataplaneInfo,
            sync: &'a Option<Box<xvs_dataplane::sync::SyncStatus>>,
        }
        json(&Both {
            dataplane: &info,
            sync: &data.sync,
        })?
    } else {
        let mut text = listing::render_dataplane(&info);
        if let Some(sync) = &data.sync {
            text.push_str(&listing::render_sync_counters(sync));
        }
        text
    };
    out.write_all(text.as_bytes())
        .map_err(|e| failure(format!("{PROGRAM}: {e}"), 1))
}

fn render(data: &ListData, list: &ListCommand, names: &Names) -> String {
    match list.what {
        ListWhat::Service(_) => data
            .services
            .first()
            .map(|s| listing::render_service(s, &list.format, names))
            .unwrap_or_default(),
        ListWhat::Connections => {
            listing::render_connections(&data.connections, &list.format, names)
        }
        ListWhat::Timeouts => listing::render_timeouts(&data.timeouts),
        // Without a dataplane nothing runs: ipvsadm prints nothing then.
        ListWhat::Daemon => data
            .sync
            .as_ref()
            .map(|s| listing::render_daemon(s))
            .unwrap_or_default(),
        ListWhat::All => listing::render_all(data, &list.format, names),
    }
}

fn done(reply: Reply) -> Result<(), Failure> {
    match reply {
        Reply::Done => Ok(()),
        Reply::Failed { message, .. } => Err(failure(message, 255)),
        Reply::Listed { .. } => Err(failure("unexpected listing from xvs", 255)),
    }
}

fn listed(reply: Reply) -> Result<ListData, Failure> {
    match reply {
        Reply::Listed { data } => Ok(data),
        Reply::Failed { message, .. } => Err(failure(message, 255)),
        Reply::Done => Err(failure("xvs sent no listing", 255)),
    }
}

fn json(data: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(data)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| failure(format!("{PROGRAM}: {e}"), 1))
}
