//! The Rust crate `zookeeper-client`, unmodified, against a Corral server: the API a Rust user
//! would call, with the answers ZooKeeper gives.

use corral_testkit::TestServer;
use std::time::Duration;
use zookeeper_client as zk;

fn opts() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

async fn connect(server: &TestServer) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(5))
        .connect(&server.addr.to_string())
        .await
        .expect("zookeeper-client connects to corral")
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("in time")
}

#[tokio::test]
async fn crud_versions_and_errors() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let (stat, _) = client.create("/crud", b"one", &opts()).await.unwrap();
    assert_eq!((stat.version, stat.data_length), (0, 3));
    assert_eq!(
        client.get_data("/crud").await.unwrap(),
        (b"one".to_vec(), stat)
    );
    let stat2 = client.set_data("/crud", b"two", Some(0)).await.unwrap();
    assert_eq!(stat2.version, 1);
    assert_eq!(
        client.set_data("/crud", b"x", Some(0)).await,
        Err(zk::Error::BadVersion)
    );
    assert_eq!(
        client.create("/crud", b"", &opts()).await.unwrap_err(),
        zk::Error::NodeExists
    );
    assert_eq!(
        client.create("/none/x", b"", &opts()).await.unwrap_err(),
        zk::Error::NoNode
    );
    client.create("/crud/child", b"", &opts()).await.unwrap();
    assert_eq!(client.delete("/crud", None).await, Err(zk::Error::NotEmpty));
    assert_eq!(client.list_children("/crud").await.unwrap(), vec!["child"]);
    assert_eq!(client.count_descendants_number("/crud").await.unwrap(), 1);
    client.delete("/crud/child", None).await.unwrap();
    client.delete("/crud", Some(1)).await.unwrap();
    assert_eq!(client.check_stat("/crud").await.unwrap(), None);
    client.sync("/").await.unwrap();
}

#[tokio::test]
async fn sequential_ephemeral_and_session_end() {
    let server = TestServer::start();
    let a = connect(&server).await;
    let b = connect(&server).await;
    a.create("/members", b"", &opts()).await.unwrap();
    let eph = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let (_, seq1) = a.create("/members/m-", b"", &eph).await.unwrap();
    let (_, seq2) = a.create("/members/m-", b"", &eph).await.unwrap();
    assert!(seq2.into_i64() > seq1.into_i64());
    assert_eq!(a.list_ephemerals("/").await.unwrap().len(), 2);
    let (_, _, watcher) = b.get_and_watch_children("/members").await.unwrap();
    drop(a); // closes the session
    let event = within(watcher.changed()).await;
    assert_eq!(event.event_type, zk::EventType::NodeChildrenChanged);
    assert!(b.list_children("/members").await.unwrap().is_empty());
}

#[tokio::test]
async fn watches_one_shot_and_persistent() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let (_, exists_watch) = client.check_and_watch_stat("/w").await.unwrap();
    let mut recursive = client
        .watch("/w", zk::AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    client.create("/w", b"", &opts()).await.unwrap();
    assert_eq!(
        within(exists_watch.changed()).await.event_type,
        zk::EventType::NodeCreated
    );
    client.create("/w/deep", b"", &opts()).await.unwrap();
    let e1 = within(recursive.changed()).await;
    let e2 = within(recursive.changed()).await;
    assert_eq!(
        (e1.event_type, e1.path.as_str()),
        (zk::EventType::NodeCreated, "/w")
    );
    assert_eq!(
        (e2.event_type, e2.path.as_str()),
        (zk::EventType::NodeCreated, "/w/deep")
    );
}

#[tokio::test]
async fn multi_is_all_or_nothing() {
    let server = TestServer::start();
    let client = connect(&server).await;
    let mut w = client.new_multi_writer();
    w.add_create("/m1", b"", &opts()).unwrap();
    w.add_create("/m2", b"", &opts()).unwrap();
    w.add_check_version("/m1", 5).unwrap();
    let err = w.commit().await.unwrap_err();
    assert!(
        matches!(
            err,
            zk::MultiWriteError::OperationFailed {
                index: 2,
                source: zk::Error::BadVersion
            }
        ),
        "{err:?}"
    );
    assert_eq!(client.check_stat("/m1").await.unwrap(), None);
    let mut w = client.new_multi_writer();
    w.add_create("/m1", b"a", &opts()).unwrap();
    w.add_set_data("/m1", b"b", Some(0)).unwrap();
    let results = w.commit().await.unwrap();
    assert_eq!(results.len(), 2);
    let mut r = client.new_multi_reader();
    r.add_get_data("/m1").unwrap();
    r.add_get_data("/missing").unwrap();
    let got = r.commit().await.unwrap();
    assert!(matches!(&got[0], zk::MultiReadResult::Data { data, .. } if data == b"b"));
    assert!(matches!(
        &got[1],
        zk::MultiReadResult::Error {
            err: zk::Error::NoNode
        }
    ));
}

#[tokio::test]
async fn acl_and_auth() {
    let server = TestServer::start();
    let owner = zk::Client::connector()
        .with_auth("digest", b"alice:secret")
        .connect(&server.addr.to_string())
        .await
        .unwrap();
    let private = zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all());
    owner.create("/private", b"mine", &private).await.unwrap();
    let (acl, _) = owner.get_acl("/private").await.unwrap();
    assert_eq!(acl.len(), 1);
    assert_eq!(acl[0].scheme(), "digest");
    let stranger = connect(&server).await;
    assert_eq!(
        stranger.get_data("/private").await.unwrap_err(),
        zk::Error::NoAuth
    );
    stranger.auth("digest", b"alice:secret").await.unwrap();
    assert_eq!(stranger.get_data("/private").await.unwrap().0, b"mine");
    let users = stranger.list_auth_users().await.unwrap();
    assert!(
        users
            .iter()
            .any(|u| u.scheme() == "digest" && u.user() == "alice"),
        "{users:?}"
    );
}

#[tokio::test]
async fn lock_recipe_excludes() {
    let server = TestServer::start();
    let a = connect(&server).await;
    let b = connect(&server).await;
    let prefix = || zk::LockPrefix::new_curator("/locks/job", "lock-").unwrap();
    let options = || {
        zk::LockOptions::new(zk::Acls::anyone_all())
            .with_ancestor_options(opts())
            .unwrap()
    };
    let held = a.lock(prefix(), b"a", options()).await.unwrap();
    let waiting = tokio::spawn({
        let b = b.clone();
        async move {
            let lock = b.lock(prefix(), b"b", options()).await.unwrap();
            lock.lock_path().to_owned()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "second locker waits while the first holds the lock"
    );
    drop(held);
    let path = within(waiting).await.unwrap();
    assert!(path.starts_with("/locks/job/"), "{path}");
}
