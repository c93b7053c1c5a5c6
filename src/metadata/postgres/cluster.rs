//! Cluster rows in PostgreSQL: broker registrations and leases, the
//! controller lease, leadership moves.

use super::{Client, STORE_NOW_MS, producers, tid};
use crate::metadata::coordination::{decode_endpoints, encode_endpoints};
use crate::metadata::{AbortedTxn, BrokerRecord, LeaderMove, ProducerStateRecord, Result, TopicId};

pub(super) async fn register(client: &Client, b: &BrokerRecord) -> Result<()> {
    client
        .execute(
            "INSERT INTO brokers (node_id, boot, host, port, rack, lease_until_ms, draining,
                 endpoints)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (node_id) DO UPDATE SET boot = excluded.boot, host = excluded.host,
                 port = excluded.port, rack = excluded.rack,
                 lease_until_ms = excluded.lease_until_ms, draining = excluded.draining,
                 endpoints = excluded.endpoints",
            &[
                &b.node_id,
                &b.boot,
                &b.host,
                &b.port,
                &b.rack,
                &b.lease_until_ms,
                &b.draining,
                &encode_endpoints(&b.endpoints),
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn renew(client: &Client, b: &BrokerRecord) -> Result<bool> {
    let updated = client
        .execute(
            "UPDATE brokers SET lease_until_ms = $3, draining = $4, host = $5, port = $6,
                 rack = $7, endpoints = $8
             WHERE node_id = $1 AND boot = $2",
            &[
                &b.node_id,
                &b.boot,
                &b.lease_until_ms,
                &b.draining,
                &b.host,
                &b.port,
                &b.rack,
                &encode_endpoints(&b.endpoints),
            ],
        )
        .await?;
    Ok(updated > 0)
}

/// The server's clock (not the transaction's start time).
pub(super) async fn clock_ms(client: &Client) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Brokers whose lease runs past `now_ms`: the reader's estimate of the
/// server's clock, as each lease's end is the writer's estimate plus the
/// session (see `broker::cluster`), so a bias that every broker's estimate
/// shares under load cancels out.
pub(super) async fn live(client: &Client, now_ms: i64) -> Result<Vec<BrokerRecord>> {
    let rows = client
        .query(
            "SELECT node_id, boot, host, port, rack, lease_until_ms, draining, endpoints
             FROM brokers
             WHERE lease_until_ms > $1 ORDER BY node_id",
            &[&now_ms],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(BrokerRecord {
                node_id: r.try_get(0)?,
                boot: r.try_get(1)?,
                host: r.try_get(2)?,
                port: r.try_get(3)?,
                rack: r.try_get(4)?,
                lease_until_ms: r.try_get(5)?,
                draining: r.try_get(6)?,
                endpoints: decode_endpoints(r.try_get::<_, &str>(7)?),
            })
        })
        .collect()
}

/// Takes or renews the controller lease for `lease_ms` from now, both on
/// the server's clock: the lease's end and every check of it (here and in
/// `move_leaders`) are the server's times, so a broker whose estimate of
/// the server's clock is off (a slow round trip measured it) neither loses
/// its moves nor keeps a lease that ran out.
pub(super) async fn try_controller(
    client: &Client,
    node_id: i32,
    boot: &str,
    lease_ms: i64,
) -> Result<bool> {
    let taken = client
        .execute(
            &format!(
                "INSERT INTO controller (id, node_id, boot, lease_until_ms)
                 VALUES (0, $1, $2, {STORE_NOW_MS} + $3)
                 ON CONFLICT (id) DO UPDATE SET node_id = excluded.node_id, boot = excluded.boot,
                     lease_until_ms = excluded.lease_until_ms
                 WHERE controller.lease_until_ms <= {STORE_NOW_MS} OR controller.node_id = $1"
            ),
            &[&node_id, &boot, &lease_ms.max(0)],
        )
        .await?;
    Ok(taken > 0)
}

pub(super) async fn move_leaders(
    client: &mut Client,
    node_id: i32,
    boot: &str,
    moves: &[LeaderMove],
) -> Result<Vec<bool>> {
    let tx = client.transaction().await?;
    // The controller row stays locked until the moves commit: a controller
    // whose lease ran out on the server's clock cannot move anything.
    let holds = tx
        .query_opt(
            &format!(
                "SELECT 1 FROM controller WHERE id = 0 AND node_id = $1 AND boot = $2
                   AND lease_until_ms > {STORE_NOW_MS} FOR UPDATE"
            ),
            &[&node_id, &boot],
        )
        .await?;
    if holds.is_none() {
        return Ok(vec![false; moves.len()]);
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE partitions SET leader_id = $1, leader_epoch = leader_epoch + 1
             WHERE topic_id = $2 AND partition = $3 AND leader_id = $4 AND leader_epoch = $5",
        )
        .await?;
    let mut applied = Vec::with_capacity(moves.len());
    for m in moves {
        let n = tx
            .execute(
                &stmt,
                &[&m.to, &tid(m.topic_id), &m.partition, &m.from, &m.epoch],
            )
            .await?;
        applied.push(n > 0);
    }
    tx.commit().await?;
    Ok(applied)
}

pub(super) async fn partition_state(
    client: &Client,
    id: TopicId,
    partition: i32,
    aborted_limit: usize,
) -> Result<(Vec<ProducerStateRecord>, Vec<AbortedTxn>)> {
    let producers = producers::load_partition(client, id, partition).await?;
    let aborted = super::transactions::recent_aborted(client, id, partition, aborted_limit).await?;
    Ok((producers, aborted))
}
