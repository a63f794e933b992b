variable "project_id" {
  description = "Project that owns the bucket."
  type        = string
}

variable "name" {
  description = "Globally unique bucket name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][-_a-z0-9]{1,61}[a-z0-9]$", var.name)) && !startswith(var.name, "goog")
    error_message = "name must be 3-63 lowercase letters, digits, hyphens or underscores, start and end with a letter or digit, and not start with \"goog\"."
  }
}

variable "location" {
  description = "Bucket location: a region (same as the cluster for cheap, fast reads), a dual-region or a multi-region."
  type        = string
}

variable "storage_class" {
  description = "Default storage class."
  type        = string
  default     = "STANDARD"
}

variable "versioning" {
  description = "Keep noncurrent object versions."
  type        = bool
  default     = false
}

variable "noncurrent_version_retention_days" {
  description = "With versioning: delete noncurrent versions this many days after they become noncurrent (0 keeps them)."
  type        = number
  default     = 0
}

variable "delete_after_days" {
  description = "Lifecycle rule: delete objects this many days after creation (0 keeps them)."
  type        = number
  default     = 0

  validation {
    condition     = var.delete_after_days >= 0
    error_message = "delete_after_days must be >= 0."
  }
}

variable "kms_key_name" {
  description = "Optional CMEK for default object encryption (projects/P/locations/L/keyRings/R/cryptoKeys/K). The key must be in the bucket's location; the Cloud Storage service agent is granted use of it by the root module."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete the bucket with its objects."
  type        = bool
  default     = false
}

variable "soft_delete_retention_seconds" {
  description = "Soft-delete retention (0 disables soft delete, 604800 is the GCS default of 7 days)."
  type        = number
  default     = 604800
}

variable "labels" {
  description = "Labels on the bucket."
  type        = map(string)
  default     = {}
}
