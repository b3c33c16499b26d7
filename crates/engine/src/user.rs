//! Resolution of an image or `--user` value (`name`, `uid`, `name:group`, `uid:gid`) against the
//! container's own /etc/passwd and /etc/group.

/// Resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Resolves `spec` given the contents of the container's passwd and group files (either may
/// be empty when the image has none). Errors name what was not found.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let spec = spec.trim();
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let (uid, mut gid, home) = if user.is_empty() {
        (0, 0, "/root".to_string())
    } else if let Ok(uid) = user.parse::<u32>() {
        match entries.iter().find(|f| f[2] == user) {
            Some(f) => (
                uid,
                f[3].parse().unwrap_or(0),
                f.get(5).unwrap_or(&"/").to_string(),
            ),
            None => (uid, 0, "/".to_string()),
        }
    } else {
        let f = entries.iter().find(|f| f[0] == user).ok_or_else(|| {
            format!("unable to find user {user}: no matching entries in passwd file")
        })?;
        let uid = f[2]
            .parse()
            .map_err(|_| format!("user {user} has an invalid uid {:?} in passwd", f[2]))?;
        (
            uid,
            f[3].parse().unwrap_or(0),
            f.get(5).unwrap_or(&"/").to_string(),
        )
    };
    if let Some(g) = grp {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    Ok(Ids { uid, gid, home })
}

#[cfg(test)]
mod tests {
    use super::*;
    const P: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
    const G: &str = "root:x:0:\nnobody:x:65534:\nstaff:x:50:\n";

    #[test]
    fn resolves_forms() {
        assert_eq!(resolve("", P, G).unwrap().uid, 0);
        assert_eq!(
            resolve("nobody", P, G).unwrap(),
            Ids {
                uid: 65534,
                gid: 65534,
                home: "/home".into()
            }
        );
        assert_eq!(resolve("1000:50", P, G).unwrap().gid, 50);
        assert_eq!(resolve("nobody:staff", P, G).unwrap().gid, 50);
        assert_eq!(resolve("0", P, G).unwrap().home, "/root");
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(resolve("ghost", P, G)
            .unwrap_err()
            .contains("unable to find user ghost"));
        assert!(resolve("root:ghosts", P, G)
            .unwrap_err()
            .contains("unable to find group ghosts"));
    }
}
