# Brokers: an autoscaling group over the three private subnets. Each
# instance runs the Strata container; its node id comes from its private
# address (unique in the VPC), its rack from its availability zone.
resource "aws_iam_role" "broker" {
  name = "${var.name}-broker"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = "ec2.amazonaws.com" }
    }]
  })
}

# Least privilege: the bucket's objects, its listing, the key for them, the
# database password; nothing else.
data "aws_iam_policy_document" "broker" {
  statement {
    sid = "Objects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.data.arn}/cluster/*"]
  }
  statement {
    sid       = "List"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["cluster/*"]
    }
  }
  statement {
    sid       = "ObjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.data.arn]
  }
  statement {
    sid       = "DatabasePassword"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_db_instance.metadata.master_user_secret[0].secret_arn]
  }
}

resource "aws_iam_role_policy" "broker" {
  name   = "${var.name}-broker"
  role   = aws_iam_role.broker.id
  policy = data.aws_iam_policy_document.broker.json
}

resource "aws_iam_instance_profile" "broker" {
  name = "${var.name}-broker"
  role = aws_iam_role.broker.name
}

data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

resource "aws_launch_template" "broker" {
  name_prefix   = "${var.name}-broker-"
  image_id      = data.aws_ssm_parameter.al2023.value
  instance_type = var.instance_type
  iam_instance_profile {
    arn = aws_iam_instance_profile.broker.arn
  }
  vpc_security_group_ids = [aws_security_group.brokers.id]
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  monitoring {
    enabled = true
  }
  ebs_optimized = true
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = 50
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = aws_kms_key.data.arn
      delete_on_termination = true
    }
  }
  user_data = base64encode(templatefile("${path.module}/cloud-init.yaml.tftpl", {
    image              = var.strata_image
    region             = var.region
    bucket             = aws_s3_bucket.data.bucket
    db_host            = aws_db_instance.metadata.address
    db_secret_arn      = aws_db_instance.metadata.master_user_secret[0].secret_arn
    session_timeout_ms = var.session_timeout_ms
  }))
}

resource "aws_autoscaling_group" "brokers" {
  name                      = "${var.name}-brokers"
  vpc_zone_identifier       = aws_subnet.private[*].id
  desired_capacity          = var.broker_count
  min_size                  = var.broker_min
  max_size                  = var.broker_max
  health_check_type         = "ELB"
  health_check_grace_period = 120
  target_group_arns         = [aws_lb_target_group.kafka.arn]
  # A terminated instance gets SIGTERM and drains its partitions first.
  default_instance_warmup = 60
  launch_template {
    id      = aws_launch_template.broker.id
    version = "$Latest"
  }
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 66
    }
  }
  tag {
    key                 = "Name"
    value               = "${var.name}-broker"
    propagate_at_launch = true
  }
}

# Bootstrap only: clients then talk to each broker's own address.
resource "aws_lb" "bootstrap" {
  #checkov:skip=CKV_AWS_91:access logs of a TCP bootstrap listener carry nothing useful
  #checkov:skip=CKV2_AWS_28:internal network load balancer (WAF applies to HTTP load balancers)
  name                             = "${var.name}-bootstrap"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = aws_subnet.private[*].id
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = true
}

resource "aws_lb_target_group" "kafka" {
  name     = "${var.name}-kafka"
  port     = 9092
  protocol = "TCP"
  vpc_id   = aws_vpc.this.id
  health_check {
    protocol = "HTTP"
    port     = "9644"
    path     = "/health"
  }
}

resource "aws_lb_listener" "kafka" {
  #checkov:skip=CKV_AWS_2:Kafka over TCP; TLS terminates at the brokers when configured
  #checkov:skip=CKV_AWS_103:TCP listener
  load_balancer_arn = aws_lb.bootstrap.arn
  port              = 9092
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.kafka.arn
  }
}
