//! `ps`: the table and the JSON Podman prints.

use serde_json::json;

use crate::db::{ContainerRecord, State};

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// "5 seconds ago", "3 minutes ago", ... as Podman words it.
pub fn ago(s: Option<&str>) -> String {
    let Some(t) = s.and_then(parse_time) else {
        return String::new();
    };
    let secs = (chrono::Utc::now() - t).num_seconds().max(0);
    let (n, unit) = match secs {
        0..=1 => return "Less than a second ago".into(),
        2..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86399 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    if n == 1 {
        format!(
            "About a{} {unit} ago",
            if unit == "hour" { "n" } else { "" }
        )
    } else {
        format!("{n} {unit}s ago")
    }
}

/// The STATUS column.
pub fn status_line(c: &ContainerRecord) -> String {
    match c.state {
        State::Configured | State::Created => "Created".into(),
        State::Running => format!("Up {}", ago(c.started_at.as_deref())),
        State::Exited if c.checkpointed => {
            format!(
                "Exited (checkpointed) {}",
                ago(c.checkpointed_at.as_deref())
            )
        }
        State::Exited => format!(
            "Exited ({}) {}",
            c.exit_code.unwrap_or(-1),
            ago(c.finished_at.as_deref())
        ),
    }
}

/// The PORTS column: `0.0.0.0:18080->80/tcp, ...`.
pub fn ports_line(c: &ContainerRecord) -> String {
    c.config
        .ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            let proto = if p.protocol.is_empty() {
                "tcp"
            } else {
                &p.protocol
            };
            if p.range > 1 {
                format!(
                    "{ip}:{}-{}->{}-{}/{proto}",
                    p.host_port,
                    p.host_port + p.range - 1,
                    p.container_port,
                    p.container_port + p.range - 1
                )
            } else {
                format!("{ip}:{}->{}/{proto}", p.host_port, p.container_port)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Podman's state word for a container.
pub fn state_word(c: &ContainerRecord) -> &'static str {
    match c.state {
        State::Configured | State::Created => "created",
        State::Running => "running",
        State::Exited => "exited",
    }
}

/// `ps --format json` objects (Podman's keys).
pub fn ps_json(list: &[ContainerRecord]) -> serde_json::Value {
    serde_json::Value::Array(
        list.iter()
            .map(|c| {
                let created = parse_time(&c.created_at).map(|t| t.timestamp()).unwrap_or(0);
                json!({
                    "Id": c.id,
                    "Names": [c.name],
                    "Image": c.config.image_name,
                    "ImageID": c.image_id,
                    "Command": c.config.args,
                    "Created": created,
                    "CreatedAt": c.created_at,
                    "State": state_word(c),
                    "Status": status_line(c),
                    "Exited": c.state == State::Exited,
                    "ExitCode": c.exit_code.unwrap_or(0),
                    "ExitedAt": c.finished_at.as_deref().and_then(parse_time).map(|t| t.timestamp()).unwrap_or(0),
                    "StartedAt": c.started_at.as_deref().and_then(parse_time).map(|t| t.timestamp()).unwrap_or(0),
                    "Pid": c.pid.unwrap_or(0),
                    "Labels": c.config.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "Pod": c.config.pod.clone().unwrap_or_default(),
                    "Ports": c.config.ports,
                    "Checkpointed": c.checkpointed,
                    "Restored": c.restored,
                })
            })
            .collect(),
    )
}
