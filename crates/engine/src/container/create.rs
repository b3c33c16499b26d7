//! `create`: a container's storage and database row, from an image and the user's options.
//! Nothing runs yet; `start` does that.

use crate::config::CreateConfig;
use crate::db::{self, ContainerRecord, State};
use crate::{names, Engine, EngineError};

/// What the user asked for (`stasis create`/`run` flags).
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub image: String,
    pub name: Option<String>,
    /// Arguments after the image: replace the image's Cmd.
    pub command: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: Vec<(String, String)>,
    pub stop_signal: Option<i32>,
    pub stop_timeout: Option<u32>,
    pub create_command: Vec<String>,
    pub auto_remove: bool,
    /// `-v` values.
    pub volumes: Vec<String>,
    /// `--network`: `bridge` (default), `none`, `host`, or network names (comma-separated).
    pub network: Option<String>,
    pub ip: Option<String>,
    pub mac_address: Option<String>,
    /// `-p` values.
    pub publish: Vec<String>,
    /// `--pod`: pod name or ID.
    pub pod: Option<String>,
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Engine {
    /// Creates a container; on any failure nothing of it is left behind.
    pub fn create(&self, req: &CreateRequest) -> Result<ContainerRecord, EngineError> {
        if let Some(n) = &req.name {
            if !names::valid_name(n) {
                return Err(EngineError::Invalid {
                    what: "container name",
                    value: n.clone(),
                    why: "names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*".into(),
                });
            }
            if let Ok(Some(other)) = db::lookup(self.conn(), n).map(|r| r.ok().flatten()) {
                if &other.name == n {
                    return Err(EngineError::NameInUse(n.clone(), other.id));
                }
            }
        }
        // Held until the row exists, so `rmi` cannot remove the image in between.
        let _store = stasis_state::FileLock::exclusive(&self.layout.store_lock())?;
        let image = self.images.resolve(&req.image)?;
        let cfg = image.config.config().clone().unwrap_or_default();
        let entrypoint = req
            .entrypoint
            .clone()
            .unwrap_or_else(|| cfg.entrypoint().clone().unwrap_or_default());
        let command = if !req.command.is_empty() {
            req.command.clone()
        } else if req.entrypoint.is_some() {
            Vec::new()
        } else {
            cfg.cmd().clone().unwrap_or_default()
        };
        let args: Vec<String> = entrypoint.iter().chain(command.iter()).cloned().collect();
        if args.is_empty() {
            return Err(EngineError::msg(format!(
                "no command specified for image {}: give one after the image name",
                req.image
            )));
        }
        let mut env: Vec<String> = cfg.env().clone().unwrap_or_default();
        for e in &req.env {
            let key = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        let id = names::new_id();
        let hostname = req.hostname.clone().unwrap_or_else(|| id[..12].to_string());
        let stop_signal = req.stop_signal.unwrap_or_else(|| {
            cfg.stop_signal()
                .as_deref()
                .and_then(parse_signal)
                .unwrap_or(libc::SIGTERM)
        });
        let mut config = CreateConfig {
            raw_image_name: req.image.clone(),
            image_name: image
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            args,
            entrypoint,
            command,
            env,
            workdir: req
                .workdir
                .clone()
                .or_else(|| cfg.working_dir().clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: req
                .user
                .clone()
                .or_else(|| cfg.user().clone())
                .unwrap_or_default(),
            hostname,
            labels: req.labels.clone(),
            stop_signal,
            stop_timeout: req.stop_timeout.unwrap_or(10),
            create_command: req.create_command.clone(),
            auto_remove: req.auto_remove,
            netns: Some(
                self.layout
                    .netns_dir()
                    .join(format!("stasis-{}", &id[..12]))
                    .to_string_lossy()
                    .into_owned(),
            ),
            network_mode: "none".into(),
            cgroup_parent: "/stasis".into(),
            spec: None,
            ..Default::default()
        };
        match &req.pod {
            Some(p) => self.join_pod(p, req, &mut config)?,
            None => self.resolve_network(
                req.network.as_deref(),
                req.ip.as_deref(),
                req.mac_address.as_deref(),
                &req.publish,
                &mut config,
            )?,
        }
        let image_volumes: Vec<String> = cfg
            .volumes()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let created_volumes = self.resolve_volumes(&req.volumes, &image_volumes, &mut config)?;
        self.create_from_config(id, image.id.clone(), config, req.name.clone())
            .inspect_err(|_| {
                for v in &created_volumes {
                    let _ = self.volume_delete(v);
                }
            })
    }

    /// Makes the storage and the row for a container whose configuration is decided. Used by
    /// `create` and by restore. Picks a random name when `config` has none.
    pub(crate) fn create_from_config(
        &self,
        id: String,
        image_id: String,
        config: CreateConfig,
        name: Option<String>,
    ) -> Result<ContainerRecord, EngineError> {
        let dir = self.layout.container_dir(&id);
        for d in [
            self.layout.bundle(&id),
            self.layout.upper(&id),
            self.layout.work(&id),
            self.layout.merged(&id),
            self.layout.bundle(&id).join("artifacts"),
        ] {
            if let Err(e) = std::fs::create_dir_all(&d) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(EngineError::io(&d, e));
            }
        }
        // The container's root directory is 0555, as containers/storage makes it: CRIU checks
        // the root's mode on restore, so both engines must agree for archives to travel.
        {
            use std::os::unix::fs::PermissionsExt;
            let upper = self.layout.upper(&id);
            if let Err(e) = std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o555))
            {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(EngineError::io(&upper, e));
            }
        }
        let explicit = name.is_some();
        let mut record = ContainerRecord {
            id: id.clone(),
            name: name.unwrap_or_else(names::random_name),
            image_id,
            state: State::Configured,
            exit_code: None,
            pid: None,
            conmon_pid: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
            checkpointed_at: None,
            restored_at: None,
            checkpointed: false,
            restored: false,
            config,
        };
        // The UNIQUE constraint on name decides races between concurrent creates.
        let mut tries = 0;
        loop {
            match db::insert(self.conn(), &record) {
                Ok(()) => return Ok(record),
                Err(e) if is_unique_violation(&e) => {
                    if !explicit && tries < 50 && db::get(self.conn(), &record.id)?.is_none() {
                        tries += 1;
                        record.name = names::random_name();
                        continue;
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    if let Ok(Ok(Some(other))) = db::lookup(self.conn(), &record.name) {
                        if other.name == record.name {
                            return Err(EngineError::NameInUse(record.name, other.id));
                        }
                    }
                    return Err(EngineError::msg(format!(
                        "a container with ID {} already exists: restore with --name to get a new ID",
                        record.id
                    )));
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e.into());
                }
            }
        }
    }
}

impl Engine {
    /// A pod member's configuration: the pod's shared namespaces, cgroup parent, and (when the
    /// pod shares its network) the infra container's network namespace instead of its own.
    fn join_pod(
        &self,
        pod: &str,
        req: &CreateRequest,
        config: &mut CreateConfig,
    ) -> Result<(), EngineError> {
        let pod = self.pod(pod)?;
        config.pod = Some(pod.id.clone());
        config.pod_infra = Some(pod.infra_id.clone());
        config.pod_shares = pod.shares.clone();
        config.cgroup_parent = pod.cgroup_parent();
        if pod.shares("uts") && req.hostname.is_none() {
            config.hostname = pod.name.clone();
        }
        if pod.shares("net") {
            if !req.publish.is_empty()
                || req.network.is_some()
                || req.ip.is_some()
                || req.mac_address.is_some()
            {
                return Err(EngineError::msg(format!(
                    "pod {} shares its network: --publish, --network, --ip and --mac-address belong to the pod (stasis pod create -p ...)",
                    pod.name
                )));
            }
            let infra = self.lookup(&pod.infra_id)?;
            config.netns = infra.config.netns.clone();
            config.network_mode = format!("container:{}", infra.id);
            Ok(())
        } else {
            self.resolve_network(
                req.network.as_deref(),
                req.ip.as_deref(),
                req.mac_address.as_deref(),
                &req.publish,
                config,
            )
        }
    }
}

fn is_unique_violation(e: &stasis_state::rusqlite::Error) -> bool {
    matches!(e, stasis_state::rusqlite::Error::SqliteFailure(f, _)
        if f.code == stasis_state::rusqlite::ErrorCode::ConstraintViolation)
}

/// Parses `SIGTERM`, `TERM`, or `15`.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("kill"), Some(9));
        assert_eq!(parse_signal("2"), Some(2));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("99"), None);
    }
}
