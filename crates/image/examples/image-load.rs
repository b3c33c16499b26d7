//! Loads an archive (or imports a root filesystem with `--import`, or pulls a reference over
//! plain HTTP with `--pull`) into a store and prints the result: a tool to measure time and
//! memory, e.g.
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
    let (mode, args): (&str, Vec<String>) = match args.first().map(String::as_str) {
        Some(m @ ("--import" | "--pull")) => (m, args[1..].to_vec()),
        _ => ("--load", args),
    };
    let [root, file] = args.as_slice() else {
        return Err("usage: image-load [--import|--pull] ROOT FILE|REFERENCE".into());
    };
    let store = stasis_image::ImageStore::open(&PathBuf::from(root))?;
    let images = match mode {
        "--import" => {
            let mut f = std::fs::File::open(file)?;
            vec![store.import_rootfs(&mut f, Some("imported"), Default::default())?]
        }
        "--pull" => {
            let opts = stasis_image::PullOptions {
                tls_verify: false,
                progress: true,
                ..Default::default()
            };
            vec![store.pull(file, &opts)?]
        }
        _ => store.load(&PathBuf::from(file))?,
    };
    for image in images {
        println!("{} {:?} {} bytes", image.id, image.names, image.size);
    }
    Ok(())
}
