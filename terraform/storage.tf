# data: training data, watched for new objects (pubsub.tf).
# models: the model registry, gs://<models>/<model>/<version>/..., versioned.
# checkpoints: deleted after checkpoint_retention_days.
# watcher-state: the watcher's claims (CONTRACTS.md), deleted after
#   watcher_state_retention_days.
# build: Cloud Build source uploads of `make images` (enable_cloud_build).

module "bucket_data" {
  source = "./modules/bucket"

  project_id    = var.project_id
  name          = local.bucket_names["data"]
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
  name                              = local.bucket_names["models"]
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
  name              = local.bucket_names["checkpoints"]
  location          = var.region
  delete_after_days = var.checkpoint_retention_days
  kms_key_name      = var.kms_key_name
  force_destroy     = var.force_destroy_buckets
  labels            = merge(var.labels, { purpose = "checkpoints" })
  # Checkpoints are rewritten often; soft delete would bill every overwrite for a week.
  soft_delete_retention_seconds = 0

  depends_on = [google_kms_crypto_key_iam_member.gcs_agent]
}

module "bucket_watcher_state" {
  source = "./modules/bucket"

  project_id        = var.project_id
  name              = local.bucket_names["watcher-state"]
  location          = var.region
  versioning        = false
  delete_after_days = var.watcher_state_retention_days
  kms_key_name      = var.kms_key_name
  force_destroy     = var.force_destroy_buckets
  labels            = merge(var.labels, { purpose = "watcher-state" })
  # Claims are small create-once objects; soft delete would keep every expired one a week.
  soft_delete_retention_seconds = 0

  depends_on = [google_kms_crypto_key_iam_member.gcs_agent]
}

# Source archives `make images` uploads for Cloud Build (gcloud builds submit
# --gcs-source-staging-dir); only the build service account reads them.
module "bucket_build" {
  source = "./modules/bucket"
  count  = var.enable_cloud_build ? 1 : 0

  project_id                    = var.project_id
  name                          = local.bucket_names["build"]
  location                      = var.region
  versioning                    = false
  delete_after_days             = 7
  kms_key_name                  = var.kms_key_name
  force_destroy                 = true # only build sources: never worth keeping
  labels                        = merge(var.labels, { purpose = "build" })
  soft_delete_retention_seconds = 0

  depends_on = [google_kms_crypto_key_iam_member.gcs_agent]
}

# Buckets kept by `make destroy KEEP_BUCKETS=1` (removed from the state, not
# deleted) would make the next apply fail with 409: `make cluster` lists the
# ones that exist in adopt_existing_buckets and Terraform imports them. An
# import of a bucket already in the state is a no-op.
import {
  for_each = toset([for b in var.adopt_existing_buckets : b if b == "data"])
  to       = module.bucket_data.google_storage_bucket.this
  id       = local.bucket_names["data"]
}

import {
  for_each = toset([for b in var.adopt_existing_buckets : b if b == "models"])
  to       = module.bucket_models.google_storage_bucket.this
  id       = local.bucket_names["models"]
}

import {
  for_each = toset([for b in var.adopt_existing_buckets : b if b == "checkpoints"])
  to       = module.bucket_checkpoints.google_storage_bucket.this
  id       = local.bucket_names["checkpoints"]
}

import {
  for_each = toset([for b in var.adopt_existing_buckets : b if b == "watcher-state"])
  to       = module.bucket_watcher_state.google_storage_bucket.this
  id       = local.bucket_names["watcher-state"]
}

import {
  for_each = toset([for b in var.adopt_existing_buckets : b if b == "build" && var.enable_cloud_build])
  to       = module.bucket_build[0].google_storage_bucket.this
  id       = local.bucket_names["build"]
}
