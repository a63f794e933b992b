# data: training data, watched for new objects (pubsub.tf).
# models: the model registry, gs://<models>/<model>/<version>/..., versioned.
# checkpoints: deleted after checkpoint_retention_days.

module "bucket_data" {
  source = "./modules/bucket"

  project_id    = var.project_id
  name          = "${local.bucket_prefix}-data"
  location      = var.region
  versioning    = true
  kms_key_name  = var.kms_key_name
  force_destroy = var.force_destroy_buckets
  labels        = merge(var.labels, { purpose = "data" })

  # Overwritten data versions are kept a week for recovery.
  noncurrent_version_retention_days = 7

  depends_on = [google_kms_crypto_key_iam_member.gcs_agent]
}

module "bucket_models" {
  source = "./modules/bucket"

  project_id                        = var.project_id
  name                              = "${local.bucket_prefix}-models"
  location                          = var.region
  versioning                        = true
  noncurrent_version_retention_days = var.model_noncurrent_version_days
  kms_key_name                      = var.kms_key_name
  force_destroy                     = var.force_destroy_buckets
  labels                            = merge(var.labels, { purpose = "models" })

  depends_on = [google_kms_crypto_key_iam_member.gcs_agent]
}

module "bucket_checkpoints" {
  source = "./modules/bucket"

  project_id        = var.project_id
  name              = "${local.bucket_prefix}-checkpoints"
  location          = var.region
  delete_after_days = var.checkpoint_retention_days
  kms_key_name      = var.kms_key_name
  force_destroy     = var.force_destroy_buckets
  labels            = merge(var.labels, { purpose = "checkpoints" })
  # Checkpoints are rewritten often; soft delete would bill every overwrite for a week.
  soft_delete_retention_seconds = 0

  depends_on = [google_kms_crypto_key_iam_member.gcs_agent]
}
