//! `inspect`: Podman-shaped JSON for a container.

use serde_json::json;

use crate::db::{ContainerRecord, State};
use crate::Engine;

/// One container's inspect object.
pub fn inspect_json(engine: &Engine, c: &ContainerRecord) -> serde_json::Value {
    let l = &engine.layout;
    json!({
        "Id": c.id,
        "Created": c.created_at,
        "Path": c.config.args.first(),
        "Args": c.config.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": super::list::state_word(c),
            "Running": c.state == State::Running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": c.pid.unwrap_or(0),
            "ConmonPid": c.conmon_pid.unwrap_or(0),
            "ExitCode": c.exit_code.unwrap_or(0),
            "Error": "",
            "StartedAt": c.started_at,
            "FinishedAt": c.finished_at,
            "Checkpointed": c.checkpointed,
            "CheckpointedAt": c.checkpointed_at,
            "Restored": c.restored,
            "RestoredAt": c.restored_at,
        },
        "Image": c.image_id,
        "ImageName": c.config.image_name,
        "Rootfs": "",
        "Name": c.name,
        "OCIRuntime": "runc",
        "ConmonPidFile": l.conmon_pidfile(&c.id),
        "PidFile": l.pidfile(&c.id),
        "StaticDir": l.bundle(&c.id),
        "LogPath": l.log_path(&c.id),
        "Driver": "overlay",
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "UpperDir": l.upper(&c.id),
                "WorkDir": l.work(&c.id),
                "MergedDir": l.merged(&c.id),
            }
        },
        "Config": {
            "Hostname": c.config.hostname,
            "Env": c.config.env,
            "Cmd": c.config.command,
            "Entrypoint": c.config.entrypoint,
            "Image": c.config.image_name,
            "WorkingDir": c.config.workdir,
            "User": c.config.user,
            "Labels": c.config.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "StopSignal": c.config.stop_signal,
            "StopTimeout": c.config.stop_timeout,
            "CreateCommand": c.config.create_command,
        },
        "NetworkSettings": {
            "SandboxKey": c.config.netns,
        },
        "HostConfig": {
            "NetworkMode": c.config.network_mode,
            "CgroupParent": c.config.cgroup_parent,
        },
    })
}
