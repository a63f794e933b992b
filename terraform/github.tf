# Optional: GitHub Actions authenticate through Workload Identity Federation
# (no JSON keys). One pool and one OIDC provider that accepts tokens of
# var.github_repository only, and two service accounts:
#   <name>-ci-deploy: only workflow runs on refs/heads/<github_deploy_branch>
#     (build and push images, helm upgrade the watcher);
#   <name>-ci-plan:   any run of the repository, read-only (terraform plan on
#     pull requests; forks get no OIDC token from GitHub at all).

locals {
  github          = var.github_repository != null
  github_repo     = coalesce(var.github_repository, "none/none")
  github_owner    = split("/", local.github_repo)[0]
  github_name     = split("/", local.github_repo)[1]
  github_pool_id  = "${var.name}-github"
  github_deploy   = "${coalesce(var.github_repository, "none/none")}@refs/heads/${var.github_deploy_branch}"
  github_pool_set = "principalSet://iam.googleapis.com/${join("", google_iam_workload_identity_pool.github[*].name)}"

  # Read-only project roles terraform plan needs to refresh every resource of
  # this configuration (no primitive roles).
  ci_plan_roles = toset([
    "roles/iam.securityReviewer",
    "roles/compute.viewer",
    "roles/container.clusterViewer",
    "roles/pubsub.viewer",
    "roles/storage.bucketViewer",
    "roles/artifactregistry.reader",
    "roles/iam.serviceAccountViewer",
    "roles/iam.workloadIdentityPoolViewer",
    "roles/monitoring.alertPolicyViewer",
    "roles/serviceusage.serviceUsageViewer",
    "roles/cloudkms.viewer",
  ])
}

resource "google_iam_workload_identity_pool" "github" {
  count                     = local.github ? 1 : 0
  project                   = var.project_id
  workload_identity_pool_id = local.github_pool_id
  display_name              = "GitHub Actions"
  description               = "Workflows of ${coalesce(var.github_repository, "-")}"

  depends_on = [google_project_service.feature]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  count                              = local.github ? 1 : 0
  project                            = var.project_id
  workload_identity_pool_id          = google_iam_workload_identity_pool.github[0].workload_identity_pool_id
  workload_identity_pool_provider_id = "github-oidc"
  display_name                       = "GitHub OIDC"

  attribute_mapping = {
    "google.subject"       = "assertion.sub"
    "attribute.repository" = "assertion.repository"
    "attribute.ref"        = "assertion.ref"
    "attribute.repo_ref"   = "assertion.repository + \"@\" + assertion.ref"
  }
  # Only tokens of this repository, and of its runs on the deploy branch or on
  # pull requests (GitHub's subject claim), are accepted at all.
  attribute_condition = "assertion.sub == 'repo:${local.github_owner}/${local.github_name}:ref:refs/heads/${var.github_deploy_branch}' || assertion.sub == 'repo:${local.github_owner}/${local.github_name}:pull_request'"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "ci_deploy" {
  count        = local.github ? 1 : 0
  project      = var.project_id
  account_id   = "${var.name}-ci-deploy"
  display_name = "CI deploy of ${var.name}"
  description  = "GitHub Actions on ${local.github_deploy}: push images, helm upgrade the watcher."
}

resource "google_service_account" "ci_plan" {
  count        = local.github ? 1 : 0
  project      = var.project_id
  account_id   = "${var.name}-ci-plan"
  display_name = "CI plan of ${var.name}"
  description  = "GitHub Actions of ${coalesce(var.github_repository, "-")}: terraform plan (read-only)."
}

# Only runs of the deploy branch may act as the deploy service account.
resource "google_service_account_iam_member" "ci_deploy_wif" {
  count              = local.github ? 1 : 0
  service_account_id = google_service_account.ci_deploy[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "${local.github_pool_set}/attribute.repo_ref/${local.github_deploy}"
}

resource "google_service_account_iam_member" "ci_plan_wif" {
  count              = local.github ? 1 : 0
  service_account_id = google_service_account.ci_plan[0].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "${local.github_pool_set}/attribute.repository/${coalesce(var.github_repository, "none/none")}"
}

# Deploy: push images (through Cloud Build, as the build service account),
# then helm upgrade the watcher in the cluster.
resource "google_artifact_registry_repository_iam_member" "ci_deploy_push" {
  count      = local.github ? 1 : 0
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.ci_deploy[0].member
}

resource "google_project_iam_member" "ci_deploy_builds" {
  # builds.editor submits builds; serviceUsageViewer lets images.sh check that
  # the Cloud Build API is enabled.
  for_each = local.github && var.enable_cloud_build ? toset(["roles/cloudbuild.builds.editor", "roles/serviceusage.serviceUsageViewer"]) : toset([])
  project  = var.project_id
  role     = each.key
  member   = google_service_account.ci_deploy[0].member
}

resource "google_service_account_iam_member" "ci_deploy_acts_as_build" {
  count              = local.github && var.enable_cloud_build ? 1 : 0
  service_account_id = google_service_account.build[0].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.ci_deploy[0].member
}

resource "google_storage_bucket_iam_member" "ci_deploy_sources" {
  count  = local.github && var.enable_cloud_build ? 1 : 0
  bucket = module.bucket_build[0].name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.ci_deploy[0].member
}

# helm upgrade: Kubernetes API access to the cluster (GKE maps this IAM role
# to edit rights on namespaced objects, helm's release Secrets and custom
# resources such as PodMonitoring included). RBAC objects of the chart (its
# Role and RoleBinding) need more: make cluster binds the namespace's "admin"
# ClusterRole to this service account in k8s_namespace only.
resource "google_project_iam_member" "ci_deploy_gke" {
  count   = local.github ? 1 : 0
  project = var.project_id
  role    = "roles/container.developer"
  member  = google_service_account.ci_deploy[0].member
}

resource "google_project_iam_member" "ci_plan" {
  for_each = local.github ? local.ci_plan_roles : toset([])
  project  = var.project_id
  role     = each.key
  member   = google_service_account.ci_plan[0].member
}

resource "google_storage_bucket_iam_member" "ci_plan_state" {
  count  = local.github && var.github_plan_state_bucket != null ? 1 : 0
  bucket = coalesce(var.github_plan_state_bucket, "none")
  role   = "roles/storage.objectAdmin"
  member = google_service_account.ci_plan[0].member
}
