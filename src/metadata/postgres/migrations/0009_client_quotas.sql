-- Client quotas (Kafka's AlterClientQuotas): one row per entity (its
-- canonical text, see broker::quotas) and quota key.

CREATE TABLE client_quotas (
    entity TEXT NOT NULL,
    quota_key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (entity, quota_key)
);
