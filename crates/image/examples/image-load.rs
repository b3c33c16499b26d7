//! Loads an archive (or imports a root filesystem with `--import`) into a store and prints the
//! result: a tool to measure time and memory, e.g.
//! `/usr/bin/time -v cargo run --release -p stasis-image --example image-load -- ROOT FILE`.

use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (import, args): (bool, Vec<String>) = match args.first().map(String::as_str) {
        Some("--import") => (true, args[1..].to_vec()),
        _ => (false, args),
    };
    let [root, file] = args.as_slice() else {
        return Err("usage: image-load [--import] ROOT FILE".into());
    };
    let store = stasis_image::ImageStore::open(&PathBuf::from(root))?;
    let images = if import {
        let mut f = std::fs::File::open(file)?;
        vec![store.import_rootfs(&mut f, Some("imported"), Default::default())?]
    } else {
        store.load(&PathBuf::from(file))?
    };
    for image in images {
        println!("{} {:?} {} bytes", image.id, image.names, image.size);
    }
    Ok(())
}
