# Identities. No service-account keys: nodes run as a dedicated
# least-privilege service account, pods act as Google service accounts only
# through Workload Identity (their Kubernetes service account is bound to
# one Google service account, which holds bucket- and subscription-level
# grants, never project-wide ones).

# ------------------------------------------------------------------ nodes ----

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "GKE nodes of ${var.name}"
  description  = "Node service account: logs, metrics, image pulls. Workloads use Workload Identity instead."
}

# The predefined role for node service accounts: write logs and metrics,
# read monitoring, resource metadata, autoscaling metrics. Nothing else.
resource "google_project_iam_member" "nodes" {
  project = var.project_id
  role    = "roles/container.defaultNodeServiceAccount"
  member  = google_service_account.nodes.member
}

# Image streaming reads images through containerfilesystem.googleapis.com,
# which the node service account must be allowed to consume
# (terraform-google-kubernetes-engine#2251); without it pods on streaming
# nodes sit in ContainerCreating.
resource "google_project_iam_member" "nodes_service_usage" {
  count   = var.enable_image_streaming ? 1 : 0
  project = var.project_id
  role    = "roles/serviceusage.serviceUsageConsumer"
  member  = google_service_account.nodes.member
}

resource "google_artifact_registry_repository_iam_member" "nodes_pull" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.nodes.member
}

# ------------------------------------------------------- training pods ----

resource "google_service_account" "trainer" {
  project      = var.project_id
  account_id   = "${var.name}-trainer"
  display_name = "Training pods of ${var.name}"
  description  = "Used by pods of KSA ${var.k8s_namespace}/${var.trainer_ksa} through Workload Identity."
}

resource "google_service_account_iam_member" "trainer_workload_identity" {
  service_account_id = google_service_account.trainer.name
  role               = "roles/iam.workloadIdentityUser"
  # The pool exists once the cluster does: take it from the cluster.
  member = "serviceAccount:${google_container_cluster.this.workload_identity_config[0].workload_pool}[${var.k8s_namespace}/${var.trainer_ksa}]"
}

resource "google_storage_bucket_iam_member" "trainer_data_viewer" {
  bucket = module.bucket_data.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.trainer.member
}

resource "google_storage_bucket_iam_member" "trainer_models_admin" {
  bucket = module.bucket_models.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.trainer.member
}

resource "google_storage_bucket_iam_member" "trainer_checkpoints_admin" {
  bucket = module.bucket_checkpoints.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.trainer.member
}

# --------------------------------------------------------------- watcher ----

resource "google_service_account" "watcher" {
  project      = var.project_id
  account_id   = "${var.name}-watcher"
  display_name = "Retraining watcher of ${var.name}"
  description  = "Used by KSA ${var.k8s_namespace}/${var.watcher_ksa} through Workload Identity."
}

resource "google_service_account_iam_member" "watcher_workload_identity" {
  service_account_id = google_service_account.watcher.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${google_container_cluster.this.workload_identity_config[0].workload_pool}[${var.k8s_namespace}/${var.watcher_ksa}]"
}

resource "google_pubsub_subscription_iam_member" "watcher_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.watcher.id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.watcher.member
}

resource "google_storage_bucket_iam_member" "watcher_data_viewer" {
  bucket = module.bucket_data.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.watcher.member
}

# ---------------------------------------------------------- optional CMEK ----
# Each Google service encrypts with the key as its own service agent.

resource "google_kms_crypto_key_iam_member" "gcs_agent" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_kms_crypto_key_iam_member" "pubsub_agent" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${local.pubsub_agent}"

  # The agent must exist before it can be granted anything.
  depends_on = [terraform_data.service_agent]
}

resource "google_kms_crypto_key_iam_member" "ar_agent" {
  count         = var.kms_key_name == null ? 0 : 1
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${local.ar_agent}"

  depends_on = [terraform_data.service_agent]
}

resource "google_kms_crypto_key_iam_member" "gke_agent" {
  count         = var.database_encryption_key == null ? 0 : 1
  crypto_key_id = var.database_encryption_key
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${local.gke_agent}"

  depends_on = [terraform_data.service_agent]
}

resource "google_pubsub_subscription_iam_member" "watcher_requests_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.retrain_requests.id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.watcher.member
}

# ---------------------------------------------------------- watcher state ----

resource "google_storage_bucket_iam_member" "watcher_state_admin" {
  bucket = module.bucket_watcher_state.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.watcher.member
}
