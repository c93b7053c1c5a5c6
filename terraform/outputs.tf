output "bootstrap_servers" {
  description = "bootstrap.servers for Kafka clients inside the VPC (or a peered network)."
  value       = "${aws_lb.bootstrap.dns_name}:9092"
}

output "bucket" {
  description = "The S3 bucket holding the data (prefix cluster/)."
  value       = aws_s3_bucket.data.bucket
}

output "metadata_endpoint" {
  description = "The RDS PostgreSQL endpoint of the metadata store."
  value       = aws_db_instance.metadata.endpoint
}
