//! The page-server wire format (`criu/page-xfer.c` in CRIU 4.2).
//!
//! Every message starts with `struct page_server_iov { u32 cmd; u64 nr_pages; u64 vaddr; u64
//! dst_id; }`: native endianness and natural alignment, so 32 bytes with 4 padding bytes after
//! `cmd`. The low 16 bits of `cmd` are the command, the high 16 bits its flags (`PE_*` for
//! `PS_IOV_ADD_F`).
//!
//! Replies: `PS_IOV_OPEN2` → 1 byte `has_parent`; `PS_IOV_PARENT` → `i32` (1 if a parent image
//! exists); `PS_IOV_CLOSE`/`PS_IOV_FORCE_CLOSE` → `i32` status 0; `PS_IOV_GET` → a
//! `PS_IOV_ADD_F|PE_PRESENT` header echoing `vaddr` and `dst_id` with `nr_pages` at most the
//! requested count, then `nr_pages * 4096` bytes. `PS_IOV_ADD_F` with `PE_PRESENT` (and the legacy
//! `PS_IOV_ADD`) is followed by `nr_pages * 4096` bytes of page data and gets no reply.

use std::fmt;

/// Page size of the protocol and of pages images (CRIU's `PAGE_SIZE` on x86_64).
pub const PAGE_SIZE: u64 = 4096;

/// Size of one message header on the wire.
pub const IOV_SIZE: usize = 32;

/// Legacy: add present pages (implies `PE_PRESENT`), data follows. Not sent by CRIU 4.2.
pub const PS_IOV_ADD: u32 = 1;
/// Legacy: add a hole whose pages are in the parent (implies `PE_PARENT`). Not sent by CRIU 4.2.
pub const PS_IOV_HOLE: u32 = 2;
/// Legacy open without a reply. Not sent by CRIU 4.2.
pub const PS_IOV_OPEN: u32 = 3;
/// Open the pagemap `dst_id`; the server replies with 1 byte `has_parent`.
pub const PS_IOV_OPEN2: u32 = 4;
/// Ask whether a parent image exists for `dst_id` (pre-dump); the server replies with an `i32`.
pub const PS_IOV_PARENT: u32 = 5;
/// Add a pagemap entry with flags `cmd >> 16`; with `PE_PRESENT` the page data follows.
pub const PS_IOV_ADD_F: u32 = 6;
/// Lazy pages: ask for `nr_pages` at `vaddr` of the task whose pid is `dst_id` (not encoded).
pub const PS_IOV_GET: u32 = 7;
/// End of session; the server replies with an `i32` status (0) and waits for the peer to close.
pub const PS_IOV_CLOSE: u32 = 0x1023;
/// End of session when the peer uses `--ps-socket` (it may not close the socket); `i32` reply.
pub const PS_IOV_FORCE_CLOSE: u32 = 0x1024;

/// Bits of `cmd` that hold the command.
pub const PS_CMD_BITS: u32 = 16;
/// Mask of the command part of `cmd`.
pub const PS_CMD_MASK: u32 = (1 << PS_CMD_BITS) - 1;
/// Bits of `dst_id` that hold the pagemap type.
pub const PS_TYPE_BITS: u32 = 8;
/// `dst_id` type of a task pagemap (`pagemap-<pid>.img`).
pub const PS_TYPE_PID: u8 = 1;
/// `dst_id` type of a shared-memory pagemap (`pagemap-shmem-<shmid>.img`).
pub const PS_TYPE_SHMEM: u8 = 2;

/// Pages id of the first pages file a CRIU page server writes (`up_page_ids_base`, `image.c`):
/// the receiver numbers its pages files from `0x10001` so that they cannot clash with the
/// `pages-1.img`… that the dumping CRIU writes into the same directory for local images.
pub const PAGE_SERVER_FIRST_PAGES_ID: u32 = 0x10001;

/// One message header, `struct page_server_iov`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PsIov {
    /// Command in the low 16 bits, flags in the high 16 bits.
    pub cmd: u32,
    /// Number of pages.
    pub nr_pages: u64,
    /// Start address (a task's virtual address, or the offset in a shmem segment).
    pub vaddr: u64,
    /// Pagemap id (see [`DstId`]); for `PS_IOV_GET` the plain pid.
    pub dst_id: u64,
}

impl PsIov {
    /// A header for `command` with `flags` in the high bits of `cmd`.
    pub fn new(command: u32, flags: u32, nr_pages: u64, vaddr: u64, dst_id: u64) -> PsIov {
        PsIov {
            cmd: (flags << PS_CMD_BITS) | (command & PS_CMD_MASK),
            nr_pages,
            vaddr,
            dst_id,
        }
    }

    /// The command (low 16 bits of `cmd`).
    pub fn command(&self) -> u32 {
        self.cmd & PS_CMD_MASK
    }

    /// The flags (high 16 bits of `cmd`).
    pub fn flags(&self) -> u32 {
        self.cmd >> PS_CMD_BITS
    }

    /// The 32 wire bytes (native endianness, zero padding).
    pub fn encode(&self) -> [u8; IOV_SIZE] {
        let mut b = [0u8; IOV_SIZE];
        b[0..4].copy_from_slice(&self.cmd.to_ne_bytes());
        b[8..16].copy_from_slice(&self.nr_pages.to_ne_bytes());
        b[16..24].copy_from_slice(&self.vaddr.to_ne_bytes());
        b[24..32].copy_from_slice(&self.dst_id.to_ne_bytes());
        b
    }

    /// Decodes 32 wire bytes; the padding is ignored. Never fails: validation is the caller's.
    pub fn decode(b: &[u8; IOV_SIZE]) -> PsIov {
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_ne_bytes(w)
        };
        PsIov {
            cmd: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            nr_pages: u64_at(8),
            vaddr: u64_at(16),
            dst_id: u64_at(24),
        }
    }
}

/// Name of a command for messages, e.g. `PS_IOV_ADD_F`.
pub fn command_name(command: u32) -> &'static str {
    match command {
        PS_IOV_ADD => "PS_IOV_ADD",
        PS_IOV_HOLE => "PS_IOV_HOLE",
        PS_IOV_OPEN => "PS_IOV_OPEN",
        PS_IOV_OPEN2 => "PS_IOV_OPEN2",
        PS_IOV_PARENT => "PS_IOV_PARENT",
        PS_IOV_ADD_F => "PS_IOV_ADD_F",
        PS_IOV_GET => "PS_IOV_GET",
        PS_IOV_CLOSE => "PS_IOV_CLOSE",
        PS_IOV_FORCE_CLOSE => "PS_IOV_FORCE_CLOSE",
        _ => "unknown command",
    }
}

/// Kind of pagemap a [`DstId`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PagemapKind {
    /// A task's memory: `pagemap-<pid>.img`.
    Task,
    /// A shared anonymous memory segment: `pagemap-shmem-<shmid>.img`.
    Shmem,
}

/// A decoded `dst_id`: `(id << 8) | type` (`encode_pm`/`decode_pm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DstId {
    /// Task or shmem.
    pub kind: PagemapKind,
    /// The pid (task) or shmid (shmem); below 2^56 when it came from [`DstId::decode`].
    pub id: u64,
}

impl DstId {
    /// A task pagemap.
    pub fn task(pid: u32) -> DstId {
        DstId {
            kind: PagemapKind::Task,
            id: u64::from(pid),
        }
    }

    /// A shmem pagemap.
    pub fn shmem(shmid: u64) -> DstId {
        DstId {
            kind: PagemapKind::Shmem,
            id: shmid,
        }
    }

    /// Decodes a raw `dst_id`, accepting the legacy type numbers of CRIU 1.0–3.2 as
    /// `decode_pm` does; `None` for an unknown type.
    pub fn decode(raw: u64) -> Option<DstId> {
        let kind = match raw & ((1 << PS_TYPE_BITS) - 1) {
            1 | 10 | 11 | 16 | 17 => PagemapKind::Task,
            2 | 27 | 28 | 29 | 32 | 33 | 34 => PagemapKind::Shmem,
            _ => return None,
        };
        Some(DstId {
            kind,
            id: raw >> PS_TYPE_BITS,
        })
    }

    /// The raw `dst_id` CRIU 4.2 sends; `None` if `id` does not fit in 56 bits.
    pub fn encode(self) -> Option<u64> {
        if self.id >> (64 - PS_TYPE_BITS) != 0 {
            return None;
        }
        let ty = match self.kind {
            PagemapKind::Task => PS_TYPE_PID,
            PagemapKind::Shmem => PS_TYPE_SHMEM,
        };
        Some((self.id << PS_TYPE_BITS) | u64::from(ty))
    }

    /// The pagemap file name CRIU uses: `pagemap-<pid>.img` or `pagemap-shmem-<shmid>.img`.
    pub fn pagemap_name(self) -> String {
        match self.kind {
            PagemapKind::Task => format!("pagemap-{}.img", self.id),
            PagemapKind::Shmem => format!("pagemap-shmem-{}.img", self.id),
        }
    }
}

impl fmt::Display for DstId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PagemapKind::Task => write!(f, "task {}", self.id),
            PagemapKind::Shmem => write!(f, "shmem {}", self.id),
        }
    }
}

/// The pages file name for a pages id: `pages-<id>.img`.
pub fn pages_name(pages_id: u32) -> String {
    format!("pages-{pages_id}.img")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iov_layout() {
        let iov = PsIov::new(PS_IOV_ADD_F, 4, 0x100, 0x7f00_0000_1000, 0x0012_3401);
        let b = iov.encode();
        assert_eq!(b.len(), 32);
        assert_eq!(&b[0..4], &((4u32 << 16) | 6).to_ne_bytes());
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &0x100u64.to_ne_bytes());
        assert_eq!(&b[16..24], &0x7f00_0000_1000u64.to_ne_bytes());
        assert_eq!(&b[24..32], &0x0012_3401_u64.to_ne_bytes());
        let d = PsIov::decode(&b);
        assert_eq!(d, iov);
        assert_eq!(d.command(), PS_IOV_ADD_F);
        assert_eq!(d.flags(), 4);
        // Padding is ignored.
        let mut b2 = b;
        b2[5] = 0xff;
        assert_eq!(PsIov::decode(&b2), iov);
    }

    #[test]
    fn dst_ids() {
        assert_eq!(DstId::task(1234).encode(), Some((1234 << 8) | 1));
        assert_eq!(DstId::shmem(99).encode(), Some((99 << 8) | 2));
        assert_eq!(DstId::decode((1234 << 8) | 1), Some(DstId::task(1234)));
        assert_eq!(DstId::decode((1234 << 8) | 11), Some(DstId::task(1234)));
        assert_eq!(DstId::decode((5 << 8) | 34), Some(DstId::shmem(5)));
        assert_eq!(DstId::decode((5 << 8) | 3), None);
        assert_eq!(DstId::decode(0), None);
        assert_eq!(DstId::shmem(1 << 56).encode(), None);
        let max = DstId::decode(u64::MAX - 0xff + 2).unwrap();
        assert_eq!(max, DstId::shmem(u64::MAX >> 8));
        assert_eq!(DstId::decode(max.encode().unwrap()), Some(max));
        assert_eq!(DstId::task(42).pagemap_name(), "pagemap-42.img");
        assert_eq!(DstId::shmem(7).pagemap_name(), "pagemap-shmem-7.img");
        assert_eq!(pages_name(PAGE_SERVER_FIRST_PAGES_ID), "pages-65537.img");
    }
}
