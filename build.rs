//! Build script: takes the three Swagger UI files that `GET /docs/*` serves
//! (`src/api_doc.rs`) out of the vendored Swagger UI release zip (crate
//! `utoipa-swagger-ui-vendored`, no download) into `OUT_DIR/swagger-ui/`,
//! where `include_bytes!` compiles them into the binary.
//!
//! Only these are embedded: the whole `dist/` folder of Swagger UI (source
//! maps, the ES bundles, the standalone preset; ~11 MB) is what
//! `utoipa-swagger-ui` would compile in, and it kept the release binary over
//! its 12 MiB budget (README "Binaries").

use std::io::Read;
use std::path::PathBuf;

/// The files `/docs` loads; keep in step with `api_doc::VENDORED`.
const FILES: [&str; 3] = ["swagger-ui.css", "swagger-ui-bundle.js", "index.css"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("swagger-ui");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/swagger-ui");
    let zip = std::io::Cursor::new(utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED);
    let mut zip = zip::ZipArchive::new(zip).expect("the vendored Swagger UI zip is readable");
    for name in FILES {
        let suffix = format!("/dist/{name}");
        let index = (0..zip.len())
            .find(|&i| zip.by_index(i).is_ok_and(|f| f.name().ends_with(&suffix)))
            .unwrap_or_else(|| panic!("the vendored Swagger UI zip has no dist/{name}"));
        let mut bytes = Vec::new();
        zip.by_index(index)
            .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
            .unwrap_or_else(|e| panic!("reading dist/{name} from the Swagger UI zip: {e}"));
        std::fs::write(out.join(name), bytes).expect("write OUT_DIR/swagger-ui file");
    }
}
