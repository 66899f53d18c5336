//! The in-process backend. See `docs.md` beside this file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use pstar_model::{PilotId, State, Timestamp, UnitId};

use crate::{
    AgentLease, Claimed, Control, Coordination, CoordinationError, DataUnitRecord, Event,
    PilotRecord, Result, SharedDescription, Subscription, Withdrawal,
};

#[doc = include_str!("docs.md")]
///
/// ```
/// # tokio_test_block(async {
/// use std::time::Duration;
/// use pstar_coordination::{Coordination, Embedded};
/// use pstar_model::{ComputeUnitDescription, PilotId};
/// use std::sync::Arc;
///
/// let store = Embedded::new("session.example");
/// let first = store.reserve_unit_ids(2).await.unwrap();
/// let desc = Arc::new(ComputeUnitDescription::new("/bin/true"));
/// store.put_units(&[(first, desc)]).await.unwrap();
/// store.enqueue(PilotId::new(0), &[first]).await.unwrap();
/// let claimed = store.claim(PilotId::new(0), 8, Duration::ZERO).await.unwrap();
/// assert_eq!(claimed[0].0, first);
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
pub struct Embedded {
    session: String,
    data: Mutex<Data>,
}

#[derive(Default)]
struct Data {
    closed: bool,
    next_unit: u64,
    next_pilot: u64,
    pilots: HashMap<PilotId, PilotRecord>,
    data: HashMap<String, DataUnitRecord>,
    space: HashMap<String, u64>,
    units: HashMap<UnitId, SharedDescription>,
    queues: HashMap<PilotId, Mailbox<UnitId>>,
    controls: HashMap<PilotId, Mailbox<Control>>,
    subscribers: Vec<mpsc::UnboundedSender<crate::Delivery>>,
    heartbeats: HashMap<PilotId, Timestamp>,
    /// Each pilot's agent lease, until when it holds.
    leases: HashMap<PilotId, (AgentLease, Instant)>,
}

/// A FIFO with a notification for its one reader.
struct Mailbox<T> {
    items: VecDeque<T>,
    notify: Arc<Notify>,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            notify: Arc::new(Notify::new()),
        }
    }
}

impl Embedded {
    /// A fresh, empty store for `session`.
    pub fn new(session: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            session: session.into(),
            data: Mutex::new(Data::default()),
        })
    }

    /// Ends the session: subscriptions end, and every later call fails with `Closed`.
    pub fn close(&self) {
        if let Ok(mut d) = self.data.lock() {
            d.closed = true;
            d.subscribers.clear();
            for mb in d
                .queues
                .values()
                .map(|m| &m.notify)
                .chain(d.controls.values().map(|m| &m.notify))
            {
                mb.notify_one();
            }
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Data>> {
        // A poisoned lock means a panic while holding it; the data may be half-updated.
        let d = self
            .data
            .lock()
            .map_err(|_| CoordinationError::Backend("store lock poisoned".into()))?;
        if d.closed {
            return Err(CoordinationError::Closed);
        }
        Ok(d)
    }

    /// Takes up to `max` items from a mailbox, waiting up to `wait` for the first.
    async fn take<T>(
        &self,
        wait: Duration,
        max: usize,
        mailbox: impl Fn(&mut Data) -> &mut Mailbox<T>,
        mut accept: impl FnMut(&mut Data, T) -> Option<T>,
    ) -> Result<Vec<T>> {
        let deadline = Instant::now() + wait;
        loop {
            let notify = {
                let mut d = self.lock()?;
                let mb = mailbox(&mut d);
                let n = mb.items.len().min(max);
                if n > 0 {
                    let taken: Vec<T> = mb.items.drain(..n).collect();
                    if !mb.items.is_empty() {
                        // Leave a wake-up for whoever reads next.
                        mb.notify.notify_one();
                    }
                    return Ok(taken
                        .into_iter()
                        .filter_map(|t| accept(&mut d, t))
                        .collect());
                }
                mb.notify.clone()
            };
            // `Notify` keeps one permit, so a notification sent between the check above
            // and this wait is not lost.
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                return Ok(Vec::new());
            }
        }
    }
}

/// Takes `units` (all with `None`) out of `pilot`'s queue; returns those removed, in queue
/// order.
fn withdraw_from(d: &mut Data, pilot: PilotId, units: Option<&[UnitId]>) -> Vec<UnitId> {
    let Some(mb) = d.queues.get_mut(&pilot) else {
        return Vec::new();
    };
    match units {
        None => mb.items.drain(..).collect(),
        Some([]) => Vec::new(),
        Some(ids) => {
            let mut wanted: HashSet<UnitId> = ids.iter().copied().collect();
            let mut removed = Vec::new();
            // Each asked-for unit goes once, as Redis's withdraw does.
            mb.items.retain(|u| {
                let hit = wanted.remove(u);
                if hit {
                    removed.push(*u);
                }
                !hit
            });
            removed
        }
    }
}

#[async_trait]
impl Coordination for Embedded {
    fn session(&self) -> &str {
        &self.session
    }

    fn url(&self) -> Option<String> {
        None
    }

    async fn reserve_unit_ids(&self, n: u64) -> Result<UnitId> {
        let mut d = self.lock()?;
        let first = d.next_unit;
        d.next_unit += n;
        Ok(UnitId::new(first))
    }

    async fn reserve_pilot_id(&self) -> Result<PilotId> {
        let mut d = self.lock()?;
        let id = d.next_pilot;
        d.next_pilot += 1;
        Ok(PilotId::new(id))
    }

    async fn put_pilot(&self, record: PilotRecord) -> Result<()> {
        self.lock()?.pilots.insert(record.id, record);
        Ok(())
    }

    async fn pilot(&self, id: PilotId) -> Result<PilotRecord> {
        self.lock()?
            .pilots
            .get(&id)
            .cloned()
            .ok_or(CoordinationError::UnknownPilot(id))
    }

    async fn all_pilots(&self) -> Result<Vec<PilotRecord>> {
        let mut all: Vec<PilotRecord> = self.lock()?.pilots.values().cloned().collect();
        all.sort_by_key(|p| p.id);
        Ok(all)
    }

    async fn reserve_space(
        &self,
        store: &str,
        bytes: u64,
        quota: Option<u64>,
    ) -> Result<std::result::Result<u64, u64>> {
        let mut d = self.lock()?;
        let used = d.space.entry(store.to_owned()).or_default();
        let after = used.saturating_add(bytes);
        if quota.is_some_and(|q| after > q) {
            return Ok(Err(*used));
        }
        *used = after;
        Ok(Ok(after))
    }

    async fn release_space(&self, store: &str, bytes: u64) -> Result<()> {
        let mut d = self.lock()?;
        let used = d.space.entry(store.to_owned()).or_default();
        *used = used.saturating_sub(bytes);
        Ok(())
    }

    async fn put_data_units(&self, records: &[DataUnitRecord]) -> Result<()> {
        let mut d = self.lock()?;
        for r in records {
            d.data.insert(r.name.clone(), r.clone());
        }
        Ok(())
    }

    async fn data_units(&self, names: &[String]) -> Result<Vec<Option<DataUnitRecord>>> {
        let d = self.lock()?;
        Ok(names.iter().map(|n| d.data.get(n).cloned()).collect())
    }

    async fn put_units(&self, units: &[Claimed]) -> Result<()> {
        let mut d = self.lock()?;
        d.units.reserve(units.len());
        for (id, desc) in units {
            d.units.insert(*id, desc.clone());
        }
        Ok(())
    }

    async fn enqueue(&self, pilot: PilotId, units: &[UnitId]) -> Result<()> {
        let mut d = self.lock()?;
        let mb = d.queues.entry(pilot).or_default();
        mb.items.extend(units.iter().copied());
        mb.notify.notify_one();
        Ok(())
    }

    async fn withdraw(&self, pilot: PilotId, units: Option<&[UnitId]>) -> Result<Vec<UnitId>> {
        let mut d = self.lock()?;
        Ok(withdraw_from(&mut d, pilot, units))
    }

    async fn withdraw_batch(
        &self,
        requests: Vec<Withdrawal>,
    ) -> Result<Vec<(PilotId, Vec<UnitId>)>> {
        // One lock for the whole batch.
        let mut d = self.lock()?;
        Ok(requests
            .into_iter()
            .map(|(pilot, units)| (pilot, withdraw_from(&mut d, pilot, units.as_deref())))
            .collect())
    }

    async fn claim(&self, pilot: PilotId, max: usize, wait: Duration) -> Result<Vec<Claimed>> {
        let claimed = self
            .take(
                wait,
                max,
                |d| d.queues.entry(pilot).or_default(),
                |_, id| Some(id),
            )
            .await?;
        let d = self.lock()?;
        Ok(claimed
            .into_iter()
            .filter_map(|id| match d.units.get(&id) {
                Some(desc) => Some((id, desc.clone())),
                None => {
                    tracing::error!(unit = %id, %pilot, "claimed a unit whose description was never stored");
                    None
                }
            })
            .collect())
    }

    async fn publish(&self, events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut d = self.lock()?;
        // A unit's description is no longer needed once it reached a final state.
        for e in &events {
            if let Event::Unit(u) = e
                && u.state.is_final()
            {
                d.units.remove(&u.unit);
            }
        }
        let batch: Arc<[Event]> = events.into();
        d.subscribers.retain(|s| s.send(Ok(batch.clone())).is_ok());
        Ok(())
    }

    async fn subscribe(&self) -> Result<Subscription> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock()?.subscribers.push(tx);
        Ok(Subscription::new(rx))
    }

    async fn send_control(&self, pilot: PilotId, message: Control) -> Result<()> {
        let mut d = self.lock()?;
        let mb = d.controls.entry(pilot).or_default();
        mb.items.push_back(message);
        mb.notify.notify_one();
        Ok(())
    }

    async fn send_controls(&self, messages: Vec<(PilotId, Control)>) -> Result<()> {
        let mut d = self.lock()?;
        for (pilot, message) in messages {
            let mb = d.controls.entry(pilot).or_default();
            mb.items.push_back(message);
            mb.notify.notify_one();
        }
        Ok(())
    }

    async fn recv_control(&self, pilot: PilotId, wait: Duration) -> Result<Vec<Control>> {
        self.take(
            wait,
            usize::MAX,
            |d| d.controls.entry(pilot).or_default(),
            |_, c| Some(c),
        )
        .await
    }

    async fn heartbeat(&self, pilot: PilotId, at: Timestamp) -> Result<()> {
        self.lock()?.heartbeats.insert(pilot, at);
        Ok(())
    }

    async fn hold_agent_lease(
        &self,
        pilot: PilotId,
        lease: &AgentLease,
        ttl: Duration,
    ) -> Result<Option<AgentLease>> {
        let mut d = self.lock()?;
        let now = Instant::now();
        match d.leases.get(&pilot) {
            Some((held, until)) if held != lease && *until > now => Ok(Some(held.clone())),
            _ => {
                d.leases.insert(pilot, (lease.clone(), now + ttl));
                Ok(None)
            }
        }
    }

    async fn release_agent_lease(&self, pilot: PilotId, lease: &AgentLease) -> Result<()> {
        let mut d = self.lock()?;
        if d.leases.get(&pilot).is_some_and(|(held, _)| held == lease) {
            d.leases.remove(&pilot);
        }
        Ok(())
    }

    async fn heartbeats(&self) -> Result<Vec<(PilotId, Timestamp)>> {
        Ok(self
            .lock()?
            .heartbeats
            .iter()
            .map(|(p, t)| (*p, *t))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use pstar_model::{ComputeUnitDescription, UnitState};

    use super::*;
    use crate::UnitEvent;

    async fn units(store: &Embedded, first: UnitId, n: u64) -> Vec<UnitId> {
        let ids: Vec<UnitId> = (0..n).map(|i| UnitId::new(first.get() + i)).collect();
        let descs: Vec<Claimed> = ids
            .iter()
            .map(|id| (*id, Arc::new(ComputeUnitDescription::new("/bin/true"))))
            .collect();
        store.put_units(&descs).await.unwrap();
        ids
    }

    #[tokio::test]
    async fn queues_are_fifo_and_withdraw_takes_only_unclaimed_units() {
        let store = Embedded::new("s");
        let first = store.reserve_unit_ids(5).await.unwrap();
        let ids = units(&store, first, 5).await;
        let p = PilotId::new(0);
        store.enqueue(p, &ids).await.unwrap();
        let got = store.claim(p, 2, Duration::ZERO).await.unwrap();
        assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), ids[..2]);
        let removed = store.withdraw(p, Some(&[ids[0], ids[3]])).await.unwrap();
        assert_eq!(removed, vec![ids[3]], "a claimed unit cannot be withdrawn");
        let rest = store.withdraw(p, None).await.unwrap();
        assert_eq!(rest, vec![ids[2], ids[4]]);
        assert!(store.claim(p, 8, Duration::ZERO).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_waiting_claim_wakes_when_units_arrive() {
        let store = Embedded::new("s");
        let first = store.reserve_unit_ids(1).await.unwrap();
        let ids = units(&store, first, 1).await;
        let p = PilotId::new(3);
        let s2 = store.clone();
        let waiter = tokio::spawn(async move { s2.claim(p, 4, Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        store.enqueue(p, &ids).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1);
        // Nothing there: an empty answer after the wait, not a hang.
        assert!(
            store
                .claim(p, 4, Duration::from_millis(20))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_batch_in_order() {
        let store = Embedded::new("s");
        let mut a = store.subscribe().await.unwrap();
        let mut b = store.subscribe().await.unwrap();
        for i in 0..3 {
            let e = Event::Unit(UnitEvent {
                unit: UnitId::new(i),
                pilot: None,
                state: UnitState::Scheduled,
                at: Timestamp::now(),
                exit_code: None,
                detail: None,
                lost_run: None,
                failed_run: false,
                result: None,
            });
            store.publish(vec![e]).await.unwrap();
        }
        for sub in [&mut a, &mut b] {
            for i in 0..3 {
                let batch = sub.next_batch().await.unwrap().unwrap();
                assert!(matches!(&batch[0], Event::Unit(u) if u.unit == UnitId::new(i)));
            }
        }
        store.close();
        assert!(a.next_batch().await.is_none());
        assert!(matches!(
            store.reserve_pilot_id().await,
            Err(CoordinationError::Closed)
        ));
    }

    #[tokio::test]
    async fn batched_withdraws_and_controls_answer_per_pilot_as_the_single_calls() {
        let store = Embedded::new("s");
        let ids = units(&store, UnitId::new(0), 11).await;
        let [p0, p1, p2, p3] = [0, 1, 2, 3].map(PilotId::new);
        store.enqueue(p0, &ids[0..4]).await.unwrap();
        store.enqueue(p1, &ids[4..8]).await.unwrap();
        store.enqueue(p2, &ids[8..11]).await.unwrap();
        assert_eq!(store.claim(p0, 2, Duration::ZERO).await.unwrap().len(), 2);
        let got = store
            .withdraw_batch(vec![
                (p0, Some(vec![ids[3], ids[1], ids[2]])),
                (p1, None),
                (p2, Some(vec![ids[10], ids[8]])),
                (p3, None),
                (p0, None),
            ])
            .await
            .unwrap();
        assert_eq!(
            got,
            [
                (p0, vec![ids[2], ids[3]]),
                (p1, ids[4..8].to_vec()),
                (p2, vec![ids[8], ids[10]]),
                (p3, vec![]),
                (p0, vec![]),
            ]
        );
        store
            .send_controls(vec![
                (p1, Control::CancelUnit(ids[4])),
                (p2, Control::CancelPilot),
                (p1, Control::CancelPilot),
            ])
            .await
            .unwrap();
        let got = store.recv_control(p1, Duration::ZERO).await.unwrap();
        assert_eq!(got, [Control::CancelUnit(ids[4]), Control::CancelPilot]);
        let got = store.recv_control(p2, Duration::ZERO).await.unwrap();
        assert_eq!(got, [Control::CancelPilot]);
    }

    #[tokio::test]
    async fn control_messages_reach_only_their_pilot() {
        let store = Embedded::new("s");
        store
            .send_control(PilotId::new(1), Control::CancelPilot)
            .await
            .unwrap();
        assert!(
            store
                .recv_control(PilotId::new(2), Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
        let got = store
            .recv_control(PilotId::new(1), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got, vec![Control::CancelPilot]);
    }
}
