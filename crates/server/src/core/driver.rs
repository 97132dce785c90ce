//! The driver: the one tokio task that runs the core. It turns what arrives (connections'
//! messages, the replicated log's requests, timers) into inputs stamped with the time they are
//! handled at, and carries out the effects: it owns the connections' outboxes, proposes to the
//! log, and spawns the questions for the leader whose answers come back as inputs. Nothing here
//! decides anything.

use super::status::{Detail, Snapshot};
use super::{Core, Effect, Incoming, Input, Outgoing, Quorum};
use crate::budget::Global;
use crate::config::ServerConfig;
use crate::watch::ConnId;
use corral_io::hash::HashMap;
use corral_replication::{AppliedMark, LeaseTimes, LogStopped, ReplicaHandle, ToCore};
use corral_tree::DataTree;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Where a connection's writer takes what the core sends it.
pub type Outbox = mpsc::UnboundedSender<Outgoing>;

/// What connections, the admin server and the server's start and stop send the core.
pub enum CoreMsg {
    /// A new connection and where its answers go.
    Connect {
        incoming: Incoming,
        out: Outbox,
    },
    Input(Input),
    /// The status snapshot, for the four-letter words and the admin server.
    Status {
        detail: Detail,
        reply: oneshot::Sender<Snapshot>,
    },
    /// A graceful stop: answered once the writes in flight are.
    Drain {
        done: oneshot::Sender<()>,
    },
}

impl Quorum for ReplicaHandle {
    fn id(&self) -> u64 {
        ReplicaHandle::id(self)
    }

    fn term(&self) -> u64 {
        ReplicaHandle::term(self)
    }

    fn serving_until(&self, now: Instant) -> Option<Instant> {
        ReplicaHandle::serving_until(self, now)
    }

    fn quorum_acked(&self, now: Instant) -> Option<Instant> {
        ReplicaHandle::quorum_acked(self, now)
    }

    fn lease_times(&self) -> LeaseTimes {
        ReplicaHandle::lease_times(self)
    }

    fn membership(&self) -> Arc<corral_replication::Membership> {
        ReplicaHandle::membership(self)
    }

    fn standalone(&self) -> bool {
        ReplicaHandle::standalone(self)
    }

    fn reconfiguring(&self) -> bool {
        ReplicaHandle::reconfiguring(self)
    }
}

/// The core with what carries out its effects.
pub struct Driver {
    core: Core,
    replica: ReplicaHandle,
    /// Where answers to the leader's questions come back.
    inbox: mpsc::Sender<CoreMsg>,
    outboxes: HashMap<ConnId, Outbox>,
    serving: watch::Sender<bool>,
    draining: Option<oneshot::Sender<()>>,
    tick: Duration,
    /// Connections' SASL exchanges in progress.
    sasl: crate::auth::SaslServers,
}

impl Driver {
    pub fn new(
        cfg: Arc<ServerConfig>,
        tree: DataTree,
        mark: AppliedMark,
        replica: ReplicaHandle,
        inbox: mpsc::Sender<CoreMsg>,
        limits: Arc<Global>,
    ) -> Self {
        let tick = Duration::from_millis((cfg.tick_time_ms as u64 / 2).clamp(10, 500));
        let quorum = Box::new(replica.clone());
        let sasl = crate::auth::SaslServers::new(cfg.auth.clone());
        let epoch_ms = cfg.io.clock.now_ms();
        let core = Core::new(cfg, tree, mark, quorum, limits, corral_io::now(), epoch_ms);
        Driver {
            core,
            replica,
            inbox,
            outboxes: HashMap::default(),
            serving: watch::Sender::new(false),
            draining: None,
            tick,
            sasl,
        }
    }

    /// Follows whether this member serves clients.
    pub fn serving_watch(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// Runs until `shutdown` fires.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<CoreMsg>,
        mut replication: mpsc::Receiver<ToCore>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Wakes the core when its lease ends or a touch round is due.
        let mut alarm = Box::pin(tokio::time::sleep_until(self.core.next_alarm().into()));
        loop {
            let wake = self.core.next_alarm();
            if alarm.deadline() != wake.into() {
                alarm.as_mut().reset(wake.into());
            }
            tokio::select! {
                msg = replication.recv() => match msg {
                    Some(msg) => self.replicated(msg),
                    None => self.handle(Input::Stopped { why: LogStopped::ShutDown }),
                },
                msg = rx.recv() => match msg {
                    Some(msg) => self.message(msg),
                    None => break,
                },
                _ = ticker.tick() => self.handle(Input::Tick),
                _ = &mut alarm => self.handle(Input::Alarm),
                _ = &mut shutdown => break,
            }
        }
        for out in self.outboxes.values() {
            let _ = out.send(Outgoing::Close);
        }
    }

    fn message(&mut self, msg: CoreMsg) {
        match msg {
            CoreMsg::Connect { incoming, out } => {
                self.outboxes.insert(incoming.conn, out);
                self.handle(Input::Connect(incoming));
            }
            CoreMsg::Input(input) => {
                match &input {
                    Input::Closed { conn } => {
                        self.outboxes.remove(conn);
                        self.sasl.forget(*conn);
                    }
                    Input::Sasl { step, outcome } if outcome.ends() => {
                        self.sasl.finished(step.conn)
                    }
                    _ => {}
                }
                self.handle(input);
            }
            CoreMsg::Status { detail, reply } => {
                let _ = reply.send(self.core.status(detail, corral_io::now()));
                self.carry_out();
            }
            CoreMsg::Drain { done } => {
                self.draining = Some(done);
                self.handle(Input::Drain);
            }
        }
    }

    /// What the replicated log asks: most become inputs; the rest are answered from the core.
    fn replicated(&mut self, msg: ToCore) {
        match msg {
            ToCore::Apply { entries, done } => {
                self.handle(Input::Apply(entries));
                let _ = done.send(());
            }
            ToCore::Snapshot { take, reply } => {
                self.handle(Input::SnapshotTaken);
                let started = corral_io::now();
                let _ = reply.send(take.start(self.core.tree(), self.core.mark()));
                tracing::debug!(pause = ?(corral_io::now() - started), "snapshot started");
            }
            ToCore::Install { tree, mark, done } => {
                self.handle(Input::Install { tree, mark });
                let _ = done.send(());
            }
            ToCore::AppliedState { reply } => {
                let _ = reply.send(self.core.mark().clone());
            }
            ToCore::Touch { sessions, reply } => {
                let _ = reply.send(self.core.touch_sessions(corral_io::now(), sessions));
                self.carry_out();
            }
            ToCore::Lost { seqs } => self.handle(Input::Lost { seqs }),
            ToCore::Stopped { why } => self.handle(Input::Stopped { why }),
            ToCore::Role { role, leader, term } => self.handle(Input::Role { role, leader, term }),
            ToCore::Membership => self.handle(Input::Membership),
        }
    }

    fn handle(&mut self, input: Input) {
        self.core.handle(input, corral_io::now());
        self.carry_out();
    }

    /// Carries out the core's effects in order.
    fn carry_out(&mut self) {
        let mut log_stopped = false;
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Send { conn, item } => {
                    let closes = item.closes();
                    if let Some(out) = self.outboxes.get(&conn) {
                        let _ = out.send(item);
                    }
                    if closes {
                        self.outboxes.remove(&conn);
                    }
                }
                Effect::Propose(framed) => {
                    if self.replica.propose(framed).is_err() {
                        log_stopped = true;
                    }
                }
                Effect::TriggerSnapshot => self.replica.trigger_snapshot(),
                Effect::Touch { sessions, ages } => {
                    self.ask(|replica| async move {
                        let touched = replica.touch(ages).await;
                        Input::Touched { touched, sessions }
                    });
                }
                Effect::Revalidate(incoming) => {
                    self.ask(|replica| async move {
                        let id = incoming.handshake.request.session_id;
                        let touched = replica.revalidate(id).await;
                        Input::Revalidated { incoming, touched }
                    });
                }
                Effect::ConnectIndex(incoming) => {
                    self.ask(|replica| async move {
                        let index = replica.read_index().await;
                        Input::ConnectIndex { incoming, index }
                    });
                }
                Effect::SyncIndex(sync) => {
                    self.ask(move |replica| async move {
                        let index = replica.read_index().await;
                        Input::SyncIndex { sync, index }
                    });
                }
                Effect::Sasl(step) => match self.sasl.step(step.conn, &step.token) {
                    // Handled here, not through `handle`: its effects join this loop, so a
                    // client's queue of SASL packets costs no stack.
                    crate::auth::SaslRun::Now(outcome) => {
                        let input = Input::Sasl { step, outcome };
                        self.core.handle(input, corral_io::now());
                    }
                    crate::auth::SaslRun::Blocking(run) => {
                        // The core holds the connection until the outcome comes back; a few
                        // steps run at once, the rest wait for a thread.
                        let (inbox, slots) = (self.inbox.clone(), self.sasl.slots());
                        tokio::spawn(async move {
                            let Ok(_slot) = slots.acquire_owned().await else {
                                return;
                            };
                            let outcome = match tokio::task::spawn_blocking(run).await {
                                Ok(outcome) => outcome,
                                Err(e) => crate::auth::SaslOutcome::Failed(format!(
                                    "SASL step panicked: {e}"
                                )),
                            };
                            let _ = inbox
                                .send(CoreMsg::Input(Input::Sasl { step, outcome }))
                                .await;
                        });
                    }
                },
                Effect::Reconfigure(call) => {
                    self.ask(move |replica| async move {
                        let outcome = replica
                            .reconfigure(call.base.clone(), call.target.clone())
                            .await;
                        Input::Reconfigured { call, outcome }
                    });
                }
                Effect::Serving(serving) => {
                    self.serving.send_replace(serving);
                }
                Effect::Drained => {
                    if let Some(done) = self.draining.take() {
                        let _ = done.send(());
                    }
                }
            }
        }
        if log_stopped {
            self.handle(Input::Stopped {
                why: LogStopped::ShutDown,
            });
        }
    }

    /// Asks the replicated log a question on its own task; the answer comes back as an input.
    fn ask<F, Fut>(&self, question: F)
    where
        F: FnOnce(ReplicaHandle) -> Fut,
        Fut: std::future::Future<Output = Input> + Send + 'static,
    {
        let answer = question(self.replica.clone());
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let input = answer.await;
            let _ = inbox.send(CoreMsg::Input(input)).await;
        });
    }
}
