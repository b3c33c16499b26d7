//! CRIU's cgroup image (`cgroup.img`), read for one question: may a restore leave the cgroups
//! to runc (CRIU's `manage-cgroups ignore`)?
//!
//! Layout (CRIU 4.2, `images/cgroup.proto`): `u32` `IMG_COMMON_MAGIC`, `u32` `CGROUP_MAGIC`,
//! then one record (`u32` length, protobuf) holding
//! `cgroup_entry { repeated cg_set_entry sets = 1; repeated cg_controller_entry controllers = 2; }`
//! with `cg_set_entry { required uint32 id = 1; repeated cg_member_entry ctls = 2; }` (the
//! cgroups of a group of tasks, one member per controller) and
//! `cg_controller_entry { repeated string cnames = 1; repeated cgroup_dir_entry dirs = 2; ... }`,
//! `cgroup_dir_entry { required string dir_name = 1; repeated cgroup_dir_entry children = 2;
//! repeated cgroup_prop_entry properties = 3; ... }`.
//!
//! runc puts CRIU into the restored container's cgroups before the restore, so tasks CRIU
//! leaves alone stay there. That is exactly what CRIU's default (soft) mode does when every
//! task was in one set of cgroups and no cgroup lay below the container's: it finds the
//! container's cgroups made by runc, skips their properties and moves the tasks into them.
//! Soft mode pays for it by mounting each hierarchy (the cgroup2 mount alone took 27 ms here).
//! A container whose tasks made cgroups of their own (systemd inside, say) must keep soft mode:
//! [`cgroups_are_flat`] says which.

use crate::error::{Error, Result};
use crate::image::{Fields, Records, Value, IMG_COMMON_MAGIC};

/// Second word of a cgroup image.
pub const CGROUP_MAGIC: u32 = 0x5938_3330;

/// Larger cgroup images are not read (a container's cgroup image is a few kilobytes).
pub const MAX_CGROUP_IMAGE: usize = 16 << 20;

/// Whether a dump's tasks were all in one set of cgroups, with no cgroup below the container's
/// own in any controller: then restoring with `manage-cgroups ignore` ends the same as CRIU's
/// default mode. Malformed images are errors; the caller keeps the default mode then.
pub fn cgroups_are_flat(bytes: &[u8]) -> Result<bool> {
    let bad = |m: String| Error::BadImage(format!("cgroup image: {m}"));
    if bytes.len() > MAX_CGROUP_IMAGE {
        return Err(bad(format!("{} bytes is too large", bytes.len())));
    }
    let mut r = Records::new(bytes, MAX_CGROUP_IMAGE);
    if r.u32() != Some(IMG_COMMON_MAGIC) || r.u32() != Some(CGROUP_MAGIC) {
        return Err(bad("not a cgroup image (magic)".into()));
    }
    let mut sets = 0usize;
    let mut flat = true;
    while let Some((_, body)) = r.record()? {
        let mut f = Fields::new(body);
        while let Some((field, v)) = f.next().map_err(|e| bad(e.into()))? {
            match (field, v) {
                (1, Value::Bytes(_)) => sets += 1,
                (2, Value::Bytes(controller)) => {
                    flat &= controller_is_flat(controller).map_err(|e| bad(e.into()))?
                }
                (1 | 2, _) => return Err(bad(format!("field {field} has the wrong wire type"))),
                _ => {}
            }
        }
    }
    Ok(flat && sets <= 1)
}

/// A controller with at most one directory (the container's) and nothing below it.
fn controller_is_flat(b: &[u8]) -> std::result::Result<bool, &'static str> {
    let mut f = Fields::new(b);
    let mut dirs = 0;
    while let Some((field, v)) = f.next()? {
        if field != 2 {
            continue;
        }
        let Value::Bytes(dir) = v else {
            return Err("a cgroup directory has the wrong wire type");
        };
        dirs += 1;
        let mut d = Fields::new(dir);
        while let Some((field, _)) = d.next()? {
            if field == 2 {
                return Ok(false); // a child cgroup
            }
        }
    }
    Ok(dirs <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, body: &[u8]) -> Vec<u8> {
        let mut v = vec![(n << 3 | 2) as u8, body.len() as u8];
        v.extend_from_slice(body);
        v
    }

    fn image(record: &[u8]) -> Vec<u8> {
        let mut v = IMG_COMMON_MAGIC.to_ne_bytes().to_vec();
        v.extend_from_slice(&CGROUP_MAGIC.to_ne_bytes());
        v.extend_from_slice(&(record.len() as u32).to_ne_bytes());
        v.extend_from_slice(record);
        v
    }

    fn set(path: &str) -> Vec<u8> {
        let member = [field(1, b"pids"), field(2, path.as_bytes())].concat();
        field(1, &[vec![8, 2], field(2, &member)].concat())
    }

    fn controller(dirs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = field(1, b"pids");
        for d in dirs {
            body.extend(field(2, d));
        }
        field(2, &body)
    }

    fn dir(name: &str, children: &[Vec<u8>]) -> Vec<u8> {
        let mut body = field(1, name.as_bytes());
        for c in children {
            body.extend(field(2, c));
        }
        body.extend(field(3, &field(1, b"pids.max")));
        body
    }

    #[test]
    fn one_set_and_no_child_cgroup_is_flat() {
        let img = image(&[set("/c"), controller(&[dir("c", &[])])].concat());
        assert!(cgroups_are_flat(&img).unwrap());
        // No cgroup information at all (an empty entry) is flat too.
        assert!(cgroups_are_flat(&image(&[])).unwrap());
    }

    #[test]
    fn two_sets_or_a_child_cgroup_is_not_flat() {
        let two = image(&[set("/c"), set("/c/sub"), controller(&[dir("c", &[])])].concat());
        assert!(!cgroups_are_flat(&two).unwrap());
        let child = image(&[set("/c/sub"), controller(&[dir("c", &[dir("sub", &[])])])].concat());
        assert!(!cgroups_are_flat(&child).unwrap());
        let two_dirs = image(&[set("/c"), controller(&[dir("c", &[]), dir("d", &[])])].concat());
        assert!(!cgroups_are_flat(&two_dirs).unwrap());
    }

    #[test]
    fn malformed_images_are_errors() {
        let good = image(&[set("/c"), controller(&[dir("c", &[])])].concat());
        assert!(cgroups_are_flat(&good[..6]).is_err());
        assert!(cgroups_are_flat(&good[..good.len() - 2]).is_err());
        let mut other = good.clone();
        other[4] ^= 1;
        assert!(cgroups_are_flat(&other).is_err());
        // A set given as a number instead of a message.
        assert!(cgroups_are_flat(&image(&[8, 1])).is_err());
    }
}
