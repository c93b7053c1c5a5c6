variable "name" {
  description = "Name prefix of every resource (and the Project tag)."
  type        = string
  default     = "strata"
}

variable "region" {
  description = "AWS region; the cluster spreads over three of its availability zones."
  type        = string
  default     = "eu-west-1"
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC (split into three public and three private subnets)."
  type        = string
  default     = "10.42.0.0/16"
}

variable "client_cidrs" {
  description = "CIDR blocks allowed to reach the Kafka port (bootstrap load balancer and brokers). Clients must reach the brokers' private addresses: from inside the VPC or a peered network."
  type        = list(string)
  default     = ["10.0.0.0/8"]
}

variable "strata_image" {
  description = "Container image of the Strata broker (built from the repository's Dockerfile and pushed to a registry the instances can pull from)."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of the brokers (local NVMe instance types such as m6id give the read cache a fast disk)."
  type        = string
  default     = "m6i.large"
}

variable "broker_count" {
  description = "Desired number of brokers; the autoscaling group keeps it between broker_min and broker_max."
  type        = number
  default     = 3
}

variable "broker_min" {
  description = "Fewest brokers the autoscaling group runs."
  type        = number
  default     = 3
}

variable "broker_max" {
  description = "Most brokers the autoscaling group runs."
  type        = number
  default     = 12
}

variable "db_instance_class" {
  description = "RDS PostgreSQL instance class of the metadata store."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage_gb" {
  description = "Storage of the metadata database in GB (metadata stays small: bounded by retained bytes / segment size)."
  type        = number
  default     = 20
}

variable "bucket_name" {
  description = "Name of the S3 bucket holding every acknowledged byte (globally unique)."
  type        = string
}

variable "session_timeout_ms" {
  description = "broker.session.timeout.ms: a broker silent this long loses its partitions to the others."
  type        = number
  default     = 6000
}
