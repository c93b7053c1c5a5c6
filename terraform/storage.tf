resource "aws_kms_key" "data" {
  description         = "${var.name}: objects and metadata at rest"
  enable_key_rotation = true
  policy              = data.aws_iam_policy_document.kms.json
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:a key policy's resource "*" is the key itself
  #checkov:skip=CKV_AWS_356:a key policy's resource "*" is the key itself
  #checkov:skip=CKV_AWS_109:the account root administers its own key, as AWS's default key policy does
  # The account administers the key; services use it through their grants
  # and the brokers' role policy.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

# Every acknowledged byte: write-ahead objects, segments (Strata deletes
# what retention and sealing free; versioning would keep it all).
resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_21:Strata deletes objects it no longer references; versions would keep every deleted byte
  #checkov:skip=CKV_AWS_144:one region by design; the metadata store is regional too
  #checkov:skip=CKV2_AWS_62:no consumer of bucket events
  #checkov:skip=CKV_AWS_18:access logging of a data bucket written many times a second costs more than it tells; CloudTrail data events are the audit trail
  bucket = var.bucket_name
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.data.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  # Uploads a crashed broker left unfinished.
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_db_subnet_group" "metadata" {
  name       = "${var.name}-metadata"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_db_parameter_group" "metadata" {
  name   = "${var.name}-metadata"
  family = "postgres16"
  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }
  # Brokers connect with sslmode=verify-full against RDS's CA bundle
  # (cloud-init.yaml.tftpl); plaintext connections are refused.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

# The metadata store: offsets, leadership, leases, producer and
# transaction state. Multi-AZ: a zone failure fails over in about a minute,
# during which writes pause and resume.
resource "aws_db_instance" "metadata" {
  #checkov:skip=CKV_AWS_161:brokers authenticate with the password RDS keeps in Secrets Manager
  #checkov:skip=CKV2_AWS_30:query logging is set to statements over 500 ms in the parameter group
  #checkov:skip=CKV2_AWS_69:the brokers connect inside the VPC without TLS today (Strata's PostgreSQL client has no TLS yet)
  identifier                          = "${var.name}-metadata"
  engine                              = "postgres"
  engine_version                      = "16"
  instance_class                      = var.db_instance_class
  allocated_storage                   = var.db_allocated_storage_gb
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.data.arn
  db_name                             = "strata"
  username                            = "strata"
  manage_master_user_password         = true
  multi_az                            = true
  db_subnet_group_name                = aws_db_subnet_group.metadata.name
  parameter_group_name                = aws_db_parameter_group.metadata.name
  vpc_security_group_ids              = [aws_security_group.db.id]
  backup_retention_period             = 14
  deletion_protection                 = true
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.data.arn
  monitoring_interval                 = 30
  monitoring_role_arn                 = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports     = ["postgresql"]
  iam_database_authentication_enabled = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-metadata-final"
}

resource "aws_iam_role" "rds_monitoring" {
  name = "${var.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
    }]
  })
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}
