//! Cluster rows in SQLite: broker registrations and leases, the controller
//! lease, leadership moves. (A SQLite store serves one machine, but the
//! rules are the same as PostgreSQL's, so one broker is a cluster of one.)

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::producers;
use crate::metadata::coordination::{decode_endpoints, encode_endpoints};
use crate::metadata::{AbortedTxn, BrokerRecord, LeaderMove, ProducerStateRecord, Result, TopicId};

pub(super) fn register(conn: &Connection, b: &BrokerRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO brokers (node_id, boot, host, port, rack, lease_until_ms, draining,
                 endpoints)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (node_id) DO UPDATE SET boot = excluded.boot, host = excluded.host,
             port = excluded.port, rack = excluded.rack,
             lease_until_ms = excluded.lease_until_ms, draining = excluded.draining,
                 endpoints = excluded.endpoints",
        params![
            b.node_id,
            b.boot,
            b.host,
            b.port,
            b.rack,
            b.lease_until_ms,
            b.draining,
            encode_endpoints(&b.endpoints)
        ],
    )?;
    Ok(())
}

pub(super) fn renew(conn: &Connection, b: &BrokerRecord) -> Result<bool> {
    let updated = conn.execute(
        "UPDATE brokers SET lease_until_ms = ?3, draining = ?4, host = ?5, port = ?6, rack = ?7, endpoints = ?8
         WHERE node_id = ?1 AND boot = ?2",
        params![
            b.node_id,
            b.boot,
            b.lease_until_ms,
            b.draining,
            b.host,
            b.port,
            b.rack,
            encode_endpoints(&b.endpoints)
        ],
    )?;
    Ok(updated > 0)
}

pub(super) fn live(conn: &Connection, now_ms: i64) -> Result<Vec<BrokerRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT node_id, boot, host, port, rack, lease_until_ms, draining, endpoints
             FROM brokers
         WHERE lease_until_ms > ?1 ORDER BY node_id",
    )?;
    let rows = stmt.query_map(params![now_ms], |r| {
        Ok(BrokerRecord {
            node_id: r.get(0)?,
            boot: r.get(1)?,
            host: r.get(2)?,
            port: r.get(3)?,
            rack: r.get(4)?,
            lease_until_ms: r.get(5)?,
            draining: r.get(6)?,
            endpoints: decode_endpoints(&r.get::<_, String>(7)?),
        })
    })?;
    Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
}

pub(super) fn try_controller(
    conn: &mut Connection,
    node_id: i32,
    boot: &str,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let taken = tx.execute(
        "INSERT INTO controller (id, node_id, boot, lease_until_ms) VALUES (0, ?1, ?2, ?4)
         ON CONFLICT (id) DO UPDATE SET node_id = excluded.node_id, boot = excluded.boot,
             lease_until_ms = excluded.lease_until_ms
         WHERE controller.lease_until_ms <= ?3 OR controller.node_id = ?1",
        params![node_id, boot, now_ms, lease_until_ms],
    )?;
    tx.commit()?;
    Ok(taken > 0)
}

pub(super) fn move_leaders(
    conn: &mut Connection,
    node_id: i32,
    boot: &str,
    now_ms: i64,
    moves: &[LeaderMove],
) -> Result<Vec<bool>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let holds: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM controller WHERE id = 0 AND node_id = ?1 AND boot = ?2
               AND lease_until_ms > ?3",
            params![node_id, boot, now_ms],
            |r| r.get(0),
        )
        .optional()?;
    if holds.is_none() {
        return Ok(vec![false; moves.len()]);
    }
    let mut applied = Vec::with_capacity(moves.len());
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE partitions SET leader_id = ?1, leader_epoch = leader_epoch + 1
             WHERE topic_id = ?2 AND partition = ?3 AND leader_id = ?4 AND leader_epoch = ?5",
        )?;
        for m in moves {
            let n = stmt.execute(params![
                m.to,
                m.topic_id.0.to_string(),
                m.partition,
                m.from,
                m.epoch
            ])?;
            applied.push(n > 0);
        }
    }
    tx.commit()?;
    Ok(applied)
}

pub(super) fn partition_state(
    conn: &Connection,
    id: TopicId,
    partition: i32,
    aborted_limit: usize,
) -> Result<(Vec<ProducerStateRecord>, Vec<AbortedTxn>)> {
    let producers = producers::load_partition(conn, id, partition)?;
    let aborted = super::transactions::recent_aborted(conn, id, partition, aborted_limit)?;
    Ok((producers, aborted))
}
