//! A test lookup adapter that answers what its configuration says, so the end-to-end
//! tests can script a line: `carrier` (the current operator), `ports` (operator changes,
//! oldest first, as `from>to@millis` joined by `;`, `from` may be empty) and
//! `sim_change` (milliseconds since the Unix epoch). A number ending in `0` fails, as
//! an operator's outage would.

use dialgate_sdk::lookup::host;
use dialgate_sdk::lookup::{Intelligence, LookupAdapter, PluginError, Port};

/// The adapter.
pub struct Line;

fn error(code: &str, message: String) -> PluginError {
    PluginError {
        code: code.to_owned(),
        message,
    }
}

/// `from>to@millis` as a port.
fn port(entry: &str) -> Result<Port, PluginError> {
    let bad = || {
        error(
            "bad-config",
            format!("ports: {entry:?} is not from>to@millis"),
        )
    };
    let (carriers, at) = entry.split_once('@').ok_or_else(bad)?;
    let (from, to) = carriers.split_once('>').ok_or_else(bad)?;
    Ok(Port {
        from_carrier: (!from.is_empty()).then(|| from.to_owned()),
        to_carrier: to.to_owned(),
        at_millis: at.parse().map_err(|_| bad())?,
    })
}

impl LookupAdapter for Line {
    fn lookup(number: &str) -> Result<Intelligence, PluginError> {
        if number.ends_with('0') {
            return Err(error("unavailable", "the operator is down".to_owned()));
        }
        let mut intelligence = Intelligence {
            carrier_name: host::config("carrier"),
            ..Intelligence::default()
        };
        if let Some(ports) = host::config("ports") {
            intelligence.porting_history = ports
                .split(';')
                .filter(|entry| !entry.is_empty())
                .map(port)
                .collect::<Result<_, _>>()?;
        }
        if let Some(millis) = host::config("sim_change") {
            intelligence.last_sim_change_millis = Some(
                millis
                    .parse()
                    .map_err(|_| error("bad-config", "sim_change: not a number".to_owned()))?,
            );
        }
        Ok(intelligence)
    }
}

dialgate_sdk::register_lookup_adapter!(Line);
