//! Bakes libtorch's directory into the binary's (and test binaries') rpath, so the
//! tool runs from anywhere without LD_LIBRARY_PATH.

use std::path::PathBuf;

fn main() {
    // torch-sys (links = "tch") exports the lib directory it linked against.
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(linked_lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        return;
    };
    // .libtorch is a symlink inside the checkout; resolving it keeps the binary
    // working when copied elsewhere or when the checkout is removed.
    let lib = std::fs::canonicalize(&linked_lib).unwrap_or_else(|_| linked_lib.clone());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        // Nothing references libtorch_cuda by symbol, so an as-needed linker
        // drops it and CUDA devices become invisible to tch.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    // The libtorch root, found lexically rather than through "..": lib may be
    // a symlink whose physical parent is elsewhere.
    let root = linked_lib.parent().map(PathBuf::from).unwrap_or_default();
    compile_shim(&root);
    let build_version = root.join("build-version");
    println!("cargo:rerun-if-changed={}", build_version.display());
    // Recorded in every report: runs are comparable only on the same libtorch.
    let version = std::fs::read_to_string(&build_version)
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=CHURN_AUDIT_LIBTORCH_VERSION={version}");
}

/// Builds src/shim/libtorch_ext.cpp against the same libtorch headers torch-sys used.
fn compile_shim(libtorch_root: &std::path::Path) {
    println!("cargo:rerun-if-changed=src/shim/libtorch_ext.cpp");
    let include = libtorch_root.join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("src/shim/libtorch_ext.cpp")
        .compile("churn_audit_shim");
}
