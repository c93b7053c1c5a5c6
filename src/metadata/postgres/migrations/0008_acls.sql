-- ACL bindings, in Kafka's codes (resource type, pattern type, operation,
-- permission type).

CREATE TABLE acls (
    resource_type SMALLINT NOT NULL,
    resource_name TEXT NOT NULL,
    pattern_type SMALLINT NOT NULL,
    principal TEXT NOT NULL,
    host TEXT NOT NULL,
    operation SMALLINT NOT NULL,
    permission_type SMALLINT NOT NULL,
    PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host, operation,
                 permission_type)
);
