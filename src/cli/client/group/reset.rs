//! `strata group reset-offsets`: the `--to-*` choice, the plan it makes per
//! partition (clamped into what the partition still holds), and the commit.

use super::*;

/// Where `reset-offsets` moves each partition; clap requires exactly one.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "target", required = true, multiple = false)]
pub struct ResetTo {
    /// Reset to the oldest offset still retained
    #[arg(long)]
    pub to_earliest: bool,
    /// Reset to the log end offset (skip everything produced so far)
    #[arg(long)]
    pub to_latest: bool,
    /// Reset to the first record at or after this time, given as RFC 3339
    /// (2024-05-01T12:00:00Z, 2024-05-01T14:00:00.5+02:00) or epoch milliseconds;
    /// partitions with no such record go to their log end offset
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to_datetime: Option<i64>,
    /// Reset to this offset, moved into the range the partition still holds
    #[arg(long, value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..))]
    pub to_offset: Option<i64>,
}

/// The resolved `--to-*` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Earliest,
    Latest,
    /// Epoch milliseconds.
    Time(i64),
    Offset(i64),
}

impl ResetTo {
    pub(super) fn target(&self) -> Target {
        match (self.to_datetime, self.to_offset) {
            (Some(millis), _) => Target::Time(millis),
            (_, Some(offset)) => Target::Offset(offset),
            _ if self.to_earliest => Target::Earliest,
            // The `target` ArgGroup guarantees that exactly one flag is set.
            _ => Target::Latest,
        }
    }
}

pub(super) async fn reset_offsets(
    connect: &ConnectArgs,
    group: &str,
    topic: &str,
    partition: Option<i32>,
    target: Target,
    execute: bool,
) -> anyhow::Result<()> {
    let info = fetch_topic(connect, topic).await?;
    let partitions: Vec<(String, i32)> = match partition {
        Some(wanted) => {
            info.require_partition(wanted)?;
            vec![(info.name.clone(), wanted)]
        }
        None => info
            .partitions
            .iter()
            .map(|p| (info.name.clone(), p.id))
            .collect(),
    };
    let rows = with_client(connect, Some(group), move |client| {
        if let Some(found) = client.find_group(&client.group_id)? {
            found.ensure_inactive(&client.group_id)?;
        }
        let (plan, rows) = plan_reset(client, &partitions, target)?;
        if execute {
            let committed = client.consumer.commit(&plan, CommitMode::Sync);
            let action = format!("commit the offsets of group '{}'", client.group_id);
            committed.map_err(|err| client.failed(&err, &action))?;
        }
        Ok(rows)
    })
    .await?;
    let mut out = render_table("TOPIC PARTITION CURRENT-OFFSET NEW-OFFSET", &rows);
    out.push_str(if execute {
        "offsets committed\n"
    } else {
        "dry run: nothing committed (add --execute)\n"
    });
    print_stdout(&out)
}

/// The offsets to commit and the table rows that show them.
fn plan_reset(
    client: &Client,
    partitions: &[(String, i32)],
    target: Target,
) -> anyhow::Result<(TopicPartitionList, Vec<Vec<String>>)> {
    let by_time = match target {
        Target::Time(millis) => client.offsets_for_time(partitions, millis)?,
        _ => BTreeMap::new(),
    };
    let mut plan = TopicPartitionList::new();
    let mut rows = Vec::new();
    for ((topic, partition), current) in client.committed(partitions)? {
        let (low, high) = client.watermarks(&topic, partition)?;
        let by_time = by_time.get(&(topic.clone(), partition)).copied().flatten();
        let new = target_offset(target, low, high, by_time);
        plan.add_partition_offset(&topic, partition, Offset::Offset(new))
            .with_context(|| format!("invalid new offset {new} for {topic}/{partition}"))?;
        let current = current.map_or_else(dash, |offset| offset.to_string());
        rows.push(vec![topic, partition.to_string(), current, new.to_string()]);
    }
    Ok((plan, rows))
}

/// The new offset of a partition that holds offsets `low..high`; `by_time` is
/// the ListOffsets answer for `Target::Time`, `None` when no record is that
/// recent, which puts the group at the log end as Kafka's own tool does.
fn target_offset(target: Target, low: i64, high: i64, by_time: Option<i64>) -> i64 {
    // Not `clamp`: it panics if a confused broker reports low > high.
    let within = |offset: i64| offset.max(low).min(high);
    match target {
        Target::Earliest => low,
        Target::Latest => high,
        Target::Offset(offset) => within(offset),
        Target::Time(_) => by_time.map_or(high, within),
    }
}

/// clap parser for `--to-datetime`: epoch milliseconds, or RFC 3339 (`T` or
/// a space between date and time, optional fraction, `Z` or `+HH:MM`).
fn parse_time(raw: &str) -> Result<i64, String> {
    let invalid = || {
        format!("expected RFC 3339 like 2024-05-01T12:00:00Z or epoch milliseconds, got '{raw}'")
    };
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().map_err(|_| invalid());
    }
    let normalized = match (raw.get(..10), raw.get(10..11), raw.get(11..)) {
        (Some(date), Some(" "), Some(time)) => format!("{date}T{time}"),
        _ => raw.to_string(),
    };
    chrono::DateTime::parse_from_rfc3339(&normalized)
        .ok()
        .map(|t| t.timestamp_millis())
        .filter(|millis| *millis >= 0)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::GroupCommand;
    use super::{Target, parse_time, target_offset};

    #[test]
    fn targets_stay_within_the_retained_range() {
        assert_eq!(target_offset(Target::Earliest, 5, 9, None), 5);
        assert_eq!(target_offset(Target::Latest, 5, 9, None), 9);
        assert_eq!(target_offset(Target::Offset(2), 5, 9, None), 5);
        assert_eq!(target_offset(Target::Offset(7), 5, 9, None), 7);
        assert_eq!(target_offset(Target::Offset(70), 5, 9, None), 9);
        assert_eq!(target_offset(Target::Time(1), 5, 9, Some(6)), 6);
        // No record at or after the time: the log end, as Kafka does.
        assert_eq!(target_offset(Target::Time(1), 5, 9, None), 9);
        // Inverted watermarks from a confused broker must not panic.
        let _ = target_offset(Target::Offset(7), 9, 5, None);
    }

    #[test]
    fn times_parse_as_rfc3339_or_epoch_millis() {
        assert_eq!(parse_time("1714564800000"), Ok(1_714_564_800_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2024-05-01T12:00:00Z"), Ok(1_714_564_800_000));
        assert_eq!(
            parse_time("2024-05-01 14:00:00.5+02:00"),
            Ok(1_714_564_800_500)
        );
        assert_eq!(
            parse_time("2024-05-01T11:30:00.123456-00:30"),
            Ok(1_714_564_800_123)
        );
        assert_eq!(parse_time("2024-02-29T23:59:59z"), Ok(1_709_251_199_000));
        assert_eq!(parse_time("2000-03-01T00:00:00Z"), Ok(951_868_800_000));
        for bad in [
            "",
            "2023-02-29T00:00:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T24:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+2:00",
            "1969-12-31T23:59:59Z",
            "-5",
            "yesterday",
            "2024-05-01T12:00:00Zjunk",
        ] {
            assert!(parse_time(bad).is_err(), "accepted '{bad}'");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        group: GroupCommand,
    }

    fn parse_reset(args: &[&str]) -> Result<(Target, bool), clap::Error> {
        let argv = ["group", "reset-offsets", "g", "--topic", "t"];
        match Cli::try_parse_from(argv.iter().chain(args))?.group {
            GroupCommand::ResetOffsets { to, execute, .. } => Ok((to.target(), execute)),
            other => panic!("parsed into {other:?}"),
        }
    }

    #[test]
    fn exactly_one_reset_target_is_required() {
        assert_eq!(
            parse_reset(&["--to-earliest"]).ok(),
            Some((Target::Earliest, false))
        );
        assert_eq!(
            parse_reset(&["--to-latest", "--execute"]).ok(),
            Some((Target::Latest, true))
        );
        assert_eq!(
            parse_reset(&["--to-offset", "4"]).ok(),
            Some((Target::Offset(4), false))
        );
        let time = parse_reset(&["--to-datetime", "1970-01-01T00:00:01Z"]).ok();
        assert_eq!(time, Some((Target::Time(1000), false)));
        assert!(parse_reset(&[]).is_err());
        assert!(parse_reset(&["--to-earliest", "--to-latest"]).is_err());
        assert!(parse_reset(&["--to-offset", "-1"]).is_err());
    }
}
