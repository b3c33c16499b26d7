//! Real netavark, real iptables, root. Every test uses its own temp root, its own bridge names
//! (`sntN...`) and its own subnets in 10.91.200.0/24 and above, in namespaces it creates; guards
//! undo everything. Without root the tests print a note and pass.

mod common;

use common::*;
use stasis_network::{
    ports, CreateNetwork, NetworkError, NetworkRequest, NetworkStore, PortMapping,
};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root, netavark and iptables");
            return;
        }
    };
}

fn ipnet(status: &stasis_network::NetworkStatus, net: &str, ifname: &str) -> String {
    status[net].interfaces[ifname].subnets[0].ipnet.clone()
}

#[test]
fn default_network_definition() {
    need_root!();
    // The real defaults, in a temp root: only the database is touched (no setup).
    let root = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let s = NetworkStore::open(root.path(), run.path()).unwrap();
    let n = s.ensure_default().unwrap();
    assert_eq!(n.name, "stasis");
    assert_eq!(n.network_interface, "stasis0");
    assert_eq!(n.subnets[0].subnet, "10.90.0.0/16");
    assert_eq!(n.subnets[0].gateway.as_deref(), Some("10.90.0.1"));
    assert_eq!(n.id.len(), 64);
    assert!(!n.dns_enabled);
    assert_eq!(s.ensure_default().unwrap(), n);
    assert_eq!(s.get(&n.id[..12]).unwrap(), n);
    let v = serde_json::to_value(&n).unwrap();
    for k in [
        "name",
        "id",
        "driver",
        "network_interface",
        "created",
        "subnets",
        "ipv6_enabled",
        "internal",
        "dns_enabled",
        "ipam_options",
    ] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    assert_eq!(v["ipam_options"]["driver"], "host-local");
    assert!(matches!(
        s.remove("stasis"),
        Err(NetworkError::RemoveDefault(_))
    ));
    let e = s.get("nope").unwrap_err().to_string();
    assert_eq!(e, "network \"nope\" not found: see \"stasis network ls\"");
}

#[test]
fn default_setup_two_containers_teardown() {
    need_root!();
    let _g = serial();
    let f = Fixture::new("snt1", "10.91.201.0/24");
    let d = f.store.ensure_default().unwrap();
    let (ns1, ns2) = (f.ns("a1"), f.ns("a2"));
    let a1 = f.attach("c1aaaaaaaaaaaaaa", &ns1, vec![net(&f.def)]);
    let a2 = f.attach("c2bbbbbbbbbbbbbb", &ns2, vec![net(&f.def)]);
    let s1 = f.store.setup(&a1).unwrap();
    let s2 = f.store.setup(&a2).unwrap();
    assert_eq!(ipnet(&s1, &f.def, "eth0"), "10.91.201.2/24");
    assert_eq!(ipnet(&s2, &f.def, "eth0"), "10.91.201.3/24");
    assert_eq!(
        s1[&f.def].interfaces["eth0"].subnets[0].gateway,
        "10.91.201.1"
    );
    let (ips, mac) = ns1.addr("eth0").expect("eth0 in netns");
    assert_eq!(ips, vec!["10.91.201.2/24"]);
    assert_eq!(mac, s1[&f.def].interfaces["eth0"].mac_address);
    assert!(link_exists(&d.network_interface));
    let leases = f.store.leases_of("c1aaaaaaaaaaaaaa").unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].mac.as_deref(), Some(mac.as_str()));

    // Setting up again keeps the address (restart after a crash).
    f.store.teardown(&a1).unwrap();
    assert!(f.store.leases_of("c1aaaaaaaaaaaaaa").unwrap().is_empty());
    assert!(ns1.addr("eth0").is_none(), "veth still in the netns");
    assert!(link_exists(&d.network_interface), "bridge still used by c2");
    f.store.teardown(&a2).unwrap();
    assert!(f.store.leases().unwrap().is_empty());
    assert!(!link_exists(&d.network_interface), "bridge left behind");
}

#[test]
fn static_ip_and_mac_and_refusals() {
    need_root!();
    let _g = serial();
    let f = Fixture::new("snt2", "10.91.209.0/24");
    let n = f
        .store
        .create(&CreateNetwork {
            name: "snt2-net".into(),
            subnet: Some("10.91.202.0/24".into()),
            dns: false,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(n.network_interface, "snt2b1");
    let (ns1, ns2) = (f.ns("b1"), f.ns("b2"));
    let mut req = net("snt2-net");
    req.static_ips = vec!["10.91.202.50".parse().unwrap()];
    req.static_mac = Some("02:AA:bb:cc:dd:ee".into());
    req.interface_name = Some("eth5".into());
    let a1 = f.attach("c1", &ns1, vec![req]);
    let s = f.store.setup(&a1).unwrap();
    assert_eq!(ipnet(&s, "snt2-net", "eth5"), "10.91.202.50/24");
    let (ips, mac) = ns1.addr("eth5").unwrap();
    assert_eq!(ips, vec!["10.91.202.50/24"]);
    assert_eq!(mac, "02:aa:bb:cc:dd:ee");

    let try_ip = |ip: &str| {
        let mut r = net("snt2-net");
        r.static_ips = vec![ip.parse::<IpAddr>().unwrap()];
        let a = f.attach("c2", &ns2, vec![r]);
        let e = f.store.setup(&a).unwrap_err();
        assert!(f.store.leases_of("c2").unwrap().is_empty(), "lease left");
        assert!(ns2.addr("eth0").is_none(), "interface left");
        e.to_string()
    };
    assert_eq!(
        try_ip("10.1.2.3"),
        "IP 10.1.2.3 is not in the subnet 10.91.202.0/24 of network \"snt2-net\""
    );
    assert_eq!(
        try_ip("10.91.202.50"),
        "IP 10.91.202.50 is already in use by container c1: choose another --ip or --ignore-static-ip on restore"
    );
    assert!(try_ip("10.91.202.1").contains("gateway"));
    assert!(try_ip("10.91.202.255").contains("broadcast"));

    let mut r = net("snt2-net");
    r.static_mac = Some("zz".into());
    let e = f.store.setup(&f.attach("c2", &ns2, vec![r])).unwrap_err();
    assert!(
        e.to_string().starts_with("invalid MAC address \"zz\": "),
        "{e}"
    );
    let mut r = net("snt2-net");
    r.static_mac = Some("02:aa:bb:cc:dd:ee".into());
    let e = f.store.setup(&f.attach("c2", &ns2, vec![r])).unwrap_err();
    assert!(matches!(e, NetworkError::MacInUse { .. }), "{e}");
    assert!(f.store.leases_of("c2").unwrap().is_empty());

    // A netns path netavark refuses: its error is relayed, nothing stays allocated.
    let bogus = tempfile::NamedTempFile::new().unwrap();
    let mut a = f.attach("c3", &ns2, vec![net("snt2-net")]);
    a.netns = bogus.path().to_path_buf();
    let e = f.store.setup(&a).unwrap_err().to_string();
    assert!(e.starts_with("netavark setup for container c3: "), "{e}");
    assert!(f.store.leases_of("c3").unwrap().is_empty());

    // Still works after all the failures; next free address after the gateway.
    let s2 = f
        .store
        .setup(&f.attach("c2", &ns2, vec![net("snt2-net")]))
        .unwrap();
    assert_eq!(ipnet(&s2, "snt2-net", "eth0"), "10.91.202.2/24");
}

/// A TCP server in a namespace: a thread that joined it answers "hello" on every connection.
struct NsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsServer {
    fn start(ns: &Netns, port: u16) -> NsServer {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns on an fd we own; only this thread changes namespace, and it ends
            // with the test.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns");
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !stop2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.write_all(b"hello");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("server up");
        NsServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fetch(addr: &str) -> Result<String, String> {
    let sa = addr.parse().map_err(|e| format!("{e}"))?;
    let mut c =
        TcpStream::connect_timeout(&sa, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut s = String::new();
    c.read_to_string(&mut s).map_err(|e| e.to_string())?;
    Ok(s)
}

fn dnat_rules() -> String {
    run(&["iptables", "-t", "nat", "-S"]).1
}

fn host_ip() -> Option<String> {
    let (ok, out) = run(&["ip", "-j", "route", "get", "192.0.2.200"]);
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    ok.then(|| v[0]["prefsrc"].as_str().map(String::from))
        .flatten()
}

#[test]
fn port_publishing() {
    need_root!();
    let _g = serial();
    let f = Fixture::new("snt3", "10.91.203.0/24");
    f.store.ensure_default().unwrap();
    let (ns1, ns2) = (f.ns("p1"), f.ns("p2"));
    let mut ports_ = vec![PortMapping {
        host_ip: String::new(),
        container_port: 8080,
        host_port: 0,
        range: 1,
        protocol: "tcp".into(),
    }];
    ports::assign_host_ports(&mut ports_).unwrap();
    let hp = ports_[0].host_port;
    let mut a1 = f.attach("c1", &ns1, vec![net(&f.def)]);
    a1.ports = ports_.clone();
    f.remember(&a1);
    let _srv = NsServer::start(&ns1, 8080);
    f.store.setup(&a1).unwrap();
    assert_eq!(f.store.ports_of("c1").unwrap().len(), 1);

    // From the host: the bridge's gateway address and the host's own address go through the
    // OUTPUT DNAT; 127.0.0.1 works too (netavark sets route_localnet on the bridge and
    // masquerades 127.0.0.0/8).
    assert_eq!(fetch(&format!("10.91.203.1:{hp}")).as_deref(), Ok("hello"));
    if let Some(ip) = host_ip() {
        assert_eq!(
            fetch(&format!("{ip}:{hp}")).as_deref(),
            Ok("hello"),
            "via {ip}"
        );
    }
    assert_eq!(
        fetch(&format!("127.0.0.1:{hp}")).as_deref(),
        Ok("hello"),
        "localhost"
    );

    // The same host port for another container: ours, DNAT only, caught from the database.
    let mut a2 = f.attach("c2", &ns2, vec![net(&f.def)]);
    a2.ports = ports_.clone();
    f.remember(&a2);
    let e = f.store.setup(&a2).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("port {hp}/tcp on 0.0.0.0 is already in use by container c1")
    );
    assert!(f.store.leases_of("c2").unwrap().is_empty());

    // A host port bound by some process: caught by binding before netavark runs.
    let busy = TcpListener::bind("0.0.0.0:0").unwrap();
    let bp = busy.local_addr().unwrap().port();
    a2.ports = vec![PortMapping {
        host_ip: String::new(),
        container_port: 80,
        host_port: bp,
        range: 1,
        protocol: "tcp".into(),
    }];
    let e = f.store.setup(&a2).unwrap_err().to_string();
    assert_eq!(e, format!("port {bp}/tcp on 0.0.0.0 is already in use"));
    assert!(f.store.leases_of("c2").unwrap().is_empty());
    assert!(ns2.addr("eth0").is_none());

    f.store.teardown(&a1).unwrap();
    assert!(f.store.ports_of("c1").unwrap().is_empty());
    assert!(fetch(&format!("10.91.203.1:{hp}")).is_err());
}

#[test]
fn create_overlap_remove_in_use() {
    need_root!();
    let _g = serial();
    let f = Fixture::new("snt4", "10.91.219.0/24");
    let a = f
        .store
        .create(&CreateNetwork {
            name: "snt4-a".into(),
            subnet: Some("10.91.204.0/24".into()),
            dns: true,
            ..Default::default()
        })
        .unwrap();
    let e = f
        .store
        .create(&CreateNetwork {
            name: "snt4-b".into(),
            subnet: Some("10.91.0.0/16".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "subnet 10.91.0.0/16 overlaps network \"snt4-a\" (10.91.204.0/24): choose another --subnet"
    );
    assert!(matches!(
        f.store.create(&CreateNetwork {
            name: "snt4-a".into(),
            ..Default::default()
        }),
        Err(NetworkError::Exists(_))
    ));
    assert!(matches!(
        f.store.create(&CreateNetwork {
            name: "podman".into(),
            ..Default::default()
        }),
        Err(NetworkError::PodmanName(_))
    ));
    // Automatic subnet: 10.91.N.0/24 overlapping neither our networks nor host routes.
    let auto = f
        .store
        .create(&CreateNetwork {
            name: "snt4-auto".into(),
            ..Default::default()
        })
        .unwrap();
    let sub = auto.subnets[0].subnet.clone();
    assert!(sub.starts_with("10.91.") && sub.ends_with(".0/24"), "{sub}");
    assert_ne!(sub, "10.91.204.0/24");
    let routes = stasis_network::ipam::host_routes();
    let c = stasis_network::ipam::Cidr::parse(&sub).unwrap();
    assert!(
        routes.iter().all(|r| !r.overlaps(&c)),
        "{sub} overlaps a route"
    );
    assert_ne!(auto.network_interface, a.network_interface);
    f.store.remove("snt4-auto").unwrap();

    // In use: refused, naming the containers; DNS network gets the short-ID alias.
    let (ns1, ns2) = (f.ns("r1"), f.ns("r2"));
    let mut r = net("snt4-a");
    r.aliases = vec!["web".into()];
    let a1 = f.attach("c1", &ns1, vec![r]);
    let a2 = f.attach("c2", &ns2, vec![net(&a.id)]);
    let s = f.store.setup(&a1).unwrap();
    assert_eq!(s["snt4-a"].dns_server_ips, vec!["10.91.204.1"]);
    f.store.setup(&a2).unwrap();
    assert_eq!(
        f.store.remove("snt4-a").unwrap_err().to_string(),
        "network \"snt4-a\" is in use by container(s) c1, c2: remove them first"
    );
    f.store.teardown(&a1).unwrap();
    f.store.teardown(&a2).unwrap();
    f.store.remove("snt4-a").unwrap();
    assert!(f.store.list().unwrap().is_empty());
    assert!(!link_exists(&a.network_interface));
}

#[test]
fn release_stale_frees_dead_containers() {
    need_root!();
    let _g = serial();
    let f = Fixture::new("snt5", "10.91.205.0/24");
    f.store.ensure_default().unwrap();
    let ns2 = f.ns("s2");
    let ns1 = f.ns("s1");
    let mut a1 = f.attach("dead", &ns1, vec![net(&f.def)]);
    a1.ports = vec![PortMapping {
        host_ip: String::new(),
        container_port: 80,
        host_port: 0,
        range: 1,
        protocol: "tcp".into(),
    }];
    ports::assign_host_ports(&mut a1.ports).unwrap();
    f.store.setup(&a1).unwrap();
    assert!(dnat_rules().contains("id: dead"));
    // The "crash" takes the namespace and its veth with it.
    f.delete_ns(&ns1);
    let a2 = f.attach("alive", &ns2, vec![net(&f.def)]);
    f.store.setup(&a2).unwrap();
    let freed = f.store.release_stale(&["alive".to_string()]).unwrap();
    assert_eq!(freed, vec!["dead"]);
    assert!(f.store.leases_of("dead").unwrap().is_empty());
    assert!(!dnat_rules().contains("id: dead"), "port rule left behind");
    assert_eq!(f.store.leases_of("alive").unwrap().len(), 1);
    assert!(f
        .store
        .release_stale(&["alive".to_string()])
        .unwrap()
        .is_empty());
    // The freed address is handed out again.
    let ns3 = f.ns("s3");
    let s3 = f
        .store
        .setup(&f.attach("new", &ns3, vec![net(&f.def)]))
        .unwrap();
    assert_eq!(ipnet(&s3, &f.def, "eth0"), "10.91.205.2/24");
}

#[test]
fn concurrent_setups_get_distinct_ips() {
    need_root!();
    let _g = serial();
    let f = Fixture::new("snt6", "10.91.206.0/24");
    f.store.ensure_default().unwrap();
    let nss: Vec<Netns> = (0..4).map(|i| f.ns(&format!("k{i}"))).collect();
    let attaches: Vec<_> = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| f.attach(&format!("cc{i}"), ns, vec![net(&f.def)]))
        .collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = attaches
            .iter()
            .map(|a| s.spawn(|| f.store.setup(a).map(|st| ipnet(&st, &f.def, "eth0"))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("thread").expect("setup"))
            .collect()
    });
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 4, "{ips:?}");
    for (ns, ip) in nss.iter().zip(&ips) {
        let _ = ns; // each namespace holds its own address
        assert!(ip.starts_with("10.91.206."));
    }
    for (ns, a) in nss.iter().zip(&attaches) {
        let (have, _) = ns.addr("eth0").unwrap();
        let lease = &f.store.leases_of(&a.container_id).unwrap()[0];
        assert_eq!(have, vec![format!("{}/24", lease.ip)]);
    }
}

#[test]
fn two_networks_and_bad_requests() {
    need_root!();
    let _g = serial();
    let f = Fixture::new("snt7", "10.91.207.0/24");
    f.store.ensure_default().unwrap();
    f.store
        .create(&CreateNetwork {
            name: "snt7-x".into(),
            subnet: Some("10.91.208.0/24".into()),
            gateway: Some("10.91.208.254".into()),
            internal: true,
            dns: false,
        })
        .unwrap();
    let ns = f.ns("t1");
    let a = f.attach("c1", &ns, vec![net(&f.def), net("snt7-x")]);
    let s = f.store.setup(&a).unwrap();
    assert_eq!(ipnet(&s, &f.def, "eth0"), "10.91.207.2/24");
    // Gateway at the end of the subnet: allocation wraps to the start.
    assert_eq!(ipnet(&s, "snt7-x", "eth1"), "10.91.208.1/24");
    assert!(ns.addr("eth1").is_some());
    // The namespace is lost (engine crash) and the container set up again in a new one: it
    // keeps its addresses and MAC, no new leases.
    let mac = s[&f.def].interfaces["eth0"].mac_address.clone();
    f.delete_ns(&ns);
    let ns = f.ns("t2");
    let mut again = a.clone();
    again.netns = ns.path();
    f.remember(&again);
    let s2 = f.store.setup(&again).unwrap();
    assert_eq!(ipnet(&s2, &f.def, "eth0"), "10.91.207.2/24");
    assert_eq!(ipnet(&s2, "snt7-x", "eth1"), "10.91.208.1/24");
    assert_eq!(s2[&f.def].interfaces["eth0"].mac_address, mac);
    assert_eq!(f.store.leases_of("c1").unwrap().len(), 2);
    // A different static IP while attached is refused.
    let mut other = again.clone();
    other.networks[0].static_ips = vec!["10.91.207.9".parse().unwrap()];
    assert!(matches!(
        f.store.setup(&other),
        Err(NetworkError::AlreadyAttached { .. })
    ));
    f.store.teardown(&again).unwrap();

    let dup = f.attach("c2", &ns, vec![net(&f.def), net(&f.def)]);
    assert!(matches!(
        f.store.setup(&dup),
        Err(NetworkError::InvalidRequest { .. })
    ));
    let missing = f.attach("c2", &ns, vec![net("nope")]);
    assert!(matches!(
        f.store.setup(&missing),
        Err(NetworkError::NotFound(_))
    ));
    let r = NetworkRequest {
        network: f.def.clone(),
        interface_name: Some("bad/name".into()),
        ..Default::default()
    };
    assert!(f.store.setup(&f.attach("c2", &ns, vec![r])).is_err());
    assert!(f.store.leases().unwrap().is_empty());
}

#[test]
fn teardown_after_netns_gone_cleans_up() {
    need_root!();
    let _g = serial();
    let f = Fixture::new("snt8", "10.91.210.0/24");
    let d = f.store.ensure_default().unwrap();
    let ns = f.ns("g1");
    let mut a = f.attach("gone1", &ns, vec![net(&f.def)]);
    a.ports = vec![PortMapping {
        host_ip: String::new(),
        container_port: 80,
        host_port: 0,
        range: 1,
        protocol: "tcp".into(),
    }];
    ports::assign_host_ports(&mut a.ports).unwrap();
    f.remember(&a);
    f.store.setup(&a).unwrap();
    assert!(dnat_rules().contains("id: gone1"));
    f.delete_ns(&ns);
    // The veth went with the namespace; netavark runs in a stand-in namespace and removes the
    // port rules, and the bridge and network chains since it was the last container.
    f.store.teardown(&a).unwrap();
    assert!(!dnat_rules().contains("id: gone1"));
    assert!(!dnat_rules().contains("10.91.210.0/24"));
    assert!(!link_exists(&d.network_interface));
    assert!(f.store.leases().unwrap().is_empty());
}
