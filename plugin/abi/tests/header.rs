//! The committed C header must match the Rust definitions, and a C compiler must agree with
//! Rust about every struct's size.

use std::path::PathBuf;
use std::process::Command;

fn header_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/lct_plugin.h")
}

#[test]
fn committed_header_is_up_to_date() {
    let generated = lct_abi::c_header();
    let path = header_path();
    if std::env::var_os("LCT_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with `LCT_BLESS=1 cargo test -p lct-abi` and commit it",
        path.display()
    );
}

#[test]
fn c_compiler_agrees_on_struct_sizes() {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    if Command::new(&compiler).arg("--version").output().is_err() {
        eprintln!("skipped: no C compiler ({compiler})");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lct-abi-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sizes = lct_abi::struct_sizes();
    let mut source =
        String::from("#include <stdio.h>\n#include \"lct_plugin.h\"\nint main(void) {\n");
    for (name, _) in &sizes {
        source.push_str(&format!("    printf(\"%zu\\n\", sizeof({name}));\n"));
    }
    source.push_str("    return 0;\n}\n");
    std::fs::write(dir.join("layout.c"), source).unwrap();
    let exe = dir.join("layout");
    let include = header_path().parent().unwrap().to_path_buf();
    let status = Command::new(&compiler)
        .args(["-std=c99", "-Wall", "-Werror", "-pedantic", "-o"])
        .arg(&exe)
        .arg(dir.join("layout.c"))
        .arg("-I")
        .arg(&include)
        .status()
        .unwrap();
    assert!(status.success(), "the header does not compile as C99");
    let output = Command::new(&exe).output().unwrap();
    let c_sizes: Vec<usize> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    for ((name, rust_size), c_size) in sizes.iter().zip(&c_sizes) {
        assert_eq!(
            rust_size, c_size,
            "sizeof({name}) differs between Rust and C"
        );
    }
    assert_eq!(sizes.len(), c_sizes.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn table_starts_with_size_and_version() {
    assert_eq!(core::mem::offset_of!(lct_abi::LctPluginApi, struct_size), 0);
    assert_eq!(core::mem::offset_of!(lct_abi::LctPluginApi, abi_version), 4);
}

#[test]
fn unknown_enum_values_are_representable() {
    let garbage = lct_abi::LctStatus(12345);
    assert_eq!(garbage.name(), None);
    assert_eq!(format!("{garbage:?}"), "LctStatus(12345)");
    assert_eq!(
        format!("{:?}", lct_abi::LctStatus::BAD_HANDLE),
        "BAD_HANDLE"
    );
}

/// A reader takes every field that ends inside the declared size. Trailing padding would break
/// that: a field appended into it would count as present although an older writer never set
/// those bytes. So every struct that grows ends with a field.
#[test]
fn growable_structs_end_at_a_field() {
    use lct_abi::SizePrefixed;
    fn check<T: SizePrefixed>() {
        assert_eq!(
            T::FIELD_ENDS.last().copied(),
            Some(core::mem::size_of::<T>()),
            "{} has trailing padding; end it with an explicit `reserved` field",
            T::NAME
        );
    }
    check::<lct_abi::LctPluginApi>();
    check::<lct_abi::LctExecuteOptions>();
    check::<lct_abi::LctNodeDesc>();
    check::<lct_abi::LctPortDesc>();
    check::<lct_abi::LctWidgetDesc>();
    check::<lct_abi::LctParam>();
}

/// Fields are only appended: what ABI 1 hosts and plugins read stays where it was.
#[test]
#[cfg(target_pointer_width = "64")]
fn the_abi_1_prefixes_have_not_moved() {
    use core::mem::offset_of;
    use lct_abi::{LctExecuteOptions, LctNodeDesc, LctPluginApi, SizePrefixed};
    assert_eq!(LctPluginApi::MIN_SIZE, 24 + 18 * 8);
    assert_eq!(offset_of!(LctPluginApi, live_handle_count), 24 + 17 * 8);
    assert_eq!(LctPluginApi::size_for_version(1), LctPluginApi::MIN_SIZE);
    assert_eq!(offset_of!(LctExecuteOptions, output_directory), 24);
    assert_eq!(offset_of!(LctExecuteOptions, param_size), 32);
    assert_eq!(LctNodeDesc::MIN_SIZE, 88);
    assert_eq!(offset_of!(LctNodeDesc, widget_count), 80);
    assert_eq!(offset_of!(LctNodeDesc, struct_size), 88);
    let sizes: Vec<_> = lct_abi::struct_sizes()
        .into_iter()
        .filter(|(name, _)| ["LctPortDesc", "LctWidgetDesc", "LctParam"].contains(name))
        .collect();
    assert_eq!(
        sizes,
        [
            ("LctPortDesc", 32),
            ("LctWidgetDesc", 112),
            ("LctParam", 40)
        ]
    );
}
