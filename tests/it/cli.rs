//! The command line as an operator or an install script uses it.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::support::{clientele, fingerprint, spawn_server};

fn run(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_reports_where_everything_went_and_refuses_to_repeat() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (ok, out, err) = run(clientele(&dir).arg("init"));
    assert!(ok, "{out}{err}");
    for expected in ["database:", "master key:", "TLS certificate:", "mode 0400"] {
        assert!(out.contains(expected), "missing {expected:?} in {out}");
    }
    let key = dir.join("keys/master.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let before = fingerprint(&dir);
    let (ok, _, err) = run(clientele(&dir).arg("init"));
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(before, fingerprint(&dir));
}

#[test]
fn serve_refuses_a_group_readable_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    assert!(run(clientele(&dir).arg("init")).0);
    let key = dir.join("keys/master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
    let before = fingerprint(&dir.join("db"));

    let (ok, _, err) = run(clientele(&dir).args(["serve", "--listen", "127.0.0.1:0"]));
    assert!(!ok);
    assert!(err.contains("readable by group or others"), "{err}");
    assert!(err.contains("chmod 0400"), "{err}");
    assert_eq!(
        before,
        fingerprint(&dir.join("db")),
        "the store must be untouched"
    );
}

#[test]
fn serve_refuses_the_wrong_key_and_leaves_the_store_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert!(run(clientele(&a).arg("init")).0);
    assert!(run(clientele(&b).arg("init")).0);
    let before = fingerprint(&a.join("db"));

    let wrong = b.join("keys/master.key");
    let (ok, _, err) = run(clientele(&a)
        .env("CLIENTELE_KEYS__MASTER_KEY_FILE", &wrong)
        .args(["serve", "--listen", "127.0.0.1:0"]));
    assert!(!ok);
    assert!(err.contains("does not open the store"), "{err}");
    assert_eq!(before, fingerprint(&a.join("db")));

    let (ok, _, err) = run(clientele(&a)
        .env(
            "CLIENTELE_KEYS__MASTER_KEY_FILE",
            tmp.path().join("missing.key"),
        )
        .arg("serve"));
    assert!(!ok);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn passphrase_store_refuses_a_wrong_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let good = tmp.path().join("good.pass");
    let bad = tmp.path().join("bad.pass");
    std::fs::write(&good, "correct horse battery staple\n").unwrap();
    std::fs::write(&bad, "incorrect horse battery staple\n").unwrap();

    let (ok, out, err) = run(clientele(&dir)
        .arg("--passphrase-file")
        .arg(&good)
        .arg("init"));
    assert!(ok, "{out}{err}");
    assert!(out.contains("derived from the passphrase"), "{out}");
    assert!(
        !dir.join("keys/master.key").exists(),
        "no key file for a passphrase store"
    );
    let before = fingerprint(&dir.join("db"));

    let (ok, _, err) = run(clientele(&dir).arg("--passphrase-file").arg(&bad).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(!ok);
    assert!(err.contains("does not open the store"), "{err}");
    assert_eq!(before, fingerprint(&dir.join("db")));

    // The right passphrase, given on standard input, opens it.
    let out = clientele(&dir)
        .args(["--passphrase-stdin", "keys", "status"])
        .stdin(std::fs::File::open(&good).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("current term:        1"));
}

#[test]
fn config_typo_is_named_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("clientele.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nworkerz = 2\n").unwrap();
    let (ok, _, err) = run(clientele(tmp.path())
        .arg("--config")
        .arg(&file)
        .arg("doctor"));
    assert!(!ok);
    assert!(err.contains("workerz"), "{err}");
    assert!(err.contains(file.to_str().unwrap()), "{err}");

    std::fs::write(&file, "[store]\ngroup_commit_window = \"a while\"\n").unwrap();
    let (ok, _, err) = run(clientele(tmp.path())
        .arg("--config")
        .arg(&file)
        .arg("doctor"));
    assert!(!ok);
    assert!(err.contains("store.group_commit_window"), "{err}");

    let (ok, _, err) = run(clientele(tmp.path())
        .env("CLIENTELE_SERVER__LISTEN", "not-an-address")
        .arg("doctor"));
    assert!(!ok);
    assert!(err.contains("server.listen"), "{err}");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    assert!(run(clientele(&dir).arg("init")).0);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, _, err) = run(clientele(&dir).args(["serve", "--listen", &addr]));
    assert!(!ok);
    assert!(
        err.contains(&addr) && err.contains("server.listen"),
        "{err}"
    );
}

#[test]
fn doctor_reports_problems_and_passes_when_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (ok, out, _) = run(clientele(&dir).arg("doctor"));
    assert!(!ok);
    assert!(
        out.contains("FAIL") && out.contains("clientele init"),
        "{out}"
    );

    assert!(run(clientele(&dir).arg("init")).0);
    let (ok, out, err) = run(clientele(&dir).args(["doctor", "--deep"]));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("records") && out.contains("certificate"),
        "{out}"
    );

    std::fs::set_permissions(
        dir.join("keys/master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (ok, out, _) = run(clientele(&dir).arg("doctor"));
    assert!(!ok);
    assert!(out.contains("chmod 0400"), "{out}");
}

#[test]
fn doctor_checks_the_connector_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let drop = tmp.path().join("drop");
    assert!(run(clientele(&dir).arg("init")).0);
    let doctor = || {
        let mut cmd = clientele(&dir);
        cmd.env("CLIENTELE_POS__INBOX", &drop).arg("doctor");
        run(&mut cmd)
    };
    let (ok, out, _) = doctor();
    assert!(!ok);
    assert!(
        out.contains("FAIL  sync pos-inbox") && out.contains("is not a folder"),
        "{out}"
    );
    std::fs::create_dir(&drop).unwrap();
    let (ok, out, err) = doctor();
    assert!(ok, "{out}{err}");
    assert!(out.contains("can be read and emptied"), "{out}");
}

#[test]
fn keys_rotate_goes_through_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    assert!(run(clientele(&dir).arg("init")).0);
    let server = spawn_server({
        let mut cmd = clientele(&dir);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        cmd
    });

    let (ok, out, err) = run(clientele(&dir).args(["keys", "rotate"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("term 2"), "{out}");
    let (ok, out, _) = run(clientele(&dir).args(["keys", "status"]));
    assert!(ok);
    assert!(out.contains("current term:        2"), "{out}");

    // doctor talks to the running server instead of failing on the store lock.
    let (ok, out, err) = run(clientele(&dir).args(["doctor", "--deep"]));
    assert!(ok, "{out}{err}");
    assert!(out.contains("running server"), "{out}");
    drop(server);
}

#[test]
fn init_can_take_the_admin_password_from_standard_input() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let run_with = |password: &str| {
        let mut child = clientele(&dir)
            .args(["init", "--admin-password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run_with("password\n");
    assert!(!ok);
    assert!(err.contains("12 characters"), "{err}");

    assert!(
        !dir.join("db").exists(),
        "a refused password leaves no store behind"
    );
    let (ok, out, err) = run_with("violet tractor hums at dawn\n");
    assert!(ok, "{out}{err}");
    assert!(out.contains("with the password given"), "{out}");
    assert!(!out.contains("one-time password"), "{out}");
}
