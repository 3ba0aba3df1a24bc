suppressMessages({library(lmerTest); library(pbkrtest); library(nlme); library(jsonlite)})
D <- "/work/wt/f-ddf/tests/reference/data/"
radon <- read.csv("/work/wt/f-ddf/teachlmm/data/radon.csv")
specs <- list(
  orthodont = list(d = read.csv(paste0(D, "orthodont.csv"), stringsAsFactors=TRUE), f = distance ~ age * Sex + (1 + age | Subject), g = "Subject"),
  machines = list(d = read.csv(paste0(D, "machines.csv"), stringsAsFactors=TRUE), f = score ~ Machine + (1 | Worker), g="Worker"),
  oats = list(d = read.csv(paste0(D, "oats.csv"), stringsAsFactors=TRUE), f = yield ~ nitro * Variety + (1 | Block), g="Block"),
  bodyweight = list(d = read.csv(paste0(D, "bodyweight.csv"), stringsAsFactors=TRUE), f = weight ~ Time * Diet + (1 + Time | Rat), g="Rat"),
  oats_ff = list(d = transform(read.csv(paste0(D, "oats.csv"), stringsAsFactors=TRUE), N = factor(paste0("n", nitro))), f = yield ~ N * Variety + (1 | Block), g="Block"),
  oats_ff_unbalanced = list(d = transform(read.csv(paste0(D, "oats.csv"), stringsAsFactors=TRUE), N = factor(paste0("n", nitro)))[-(1:5), ], f = yield ~ N * Variety + (1 | Block), g="Block"),
  chickweight = list(d = read.csv(paste0(D, "chickweight.csv"), stringsAsFactors=TRUE), f = weight ~ Time * diet + (1 + Time | Chick), g="Chick"),
  radon_M1 = list(d = radon, f = log_radon ~ 1 + floor + (1 | county), g = "county"),
  radon_M3 = list(d = radon, f = log_radon ~ 1 + floor + (1 + floor | county), g = "county"),
  radon_M3u = list(d = radon, f = log_radon ~ 1 + floor + (1 + floor || county), g = "county"),
  radon_M4 = list(d = radon, f = log_radon ~ 1 + floor + log_uranium + floor:log_uranium + (1 + floor | county), g = "county",
                  start = c(0.165992808180233, 0.168140202869836, 0.373607135891077)),
  exam = list(d = read.csv(paste0(D, "exam.csv"), stringsAsFactors=TRUE), f = normexam ~ standLRT + sex + (1 + standLRT | school), g="school")
)
out <- list()
for (nm in names(specs)) {
  s <- specs[[nm]]; s$d[[s$g]] <- factor(s$d[[s$g]])
  ctl <- lmerControl(optimizer="bobyqa", optCtrl=list(rhobeg=0.02, rhoend=1e-12, maxfun=1e5))
  m <- if (is.null(s$start)) lmer(s$f, s$d, REML=TRUE, control=ctl) else lmer(s$f, s$d, REML=TRUE, control=ctl, start=list(theta=s$start))
  mml <- if (is.null(s$start)) lmer(s$f, s$d, REML=FALSE, control=ctl) else lmer(s$f, s$d, REML=FALSE, control=ctl, start=list(theta=s$start))
  sat <- coef(summary(m)); kr <- coef(summary(m, ddf="Kenward-Roger"))
  a3s <- anova(m, type=3); a3k <- anova(m, type=3, ddf="Kenward-Roger")
  fx <- lme4::nobars(s$f); rnd <- as.formula(paste("~1|", s$g)); if (!is.null(s$start)) s$d$county <- factor(s$d$county)
  bw <- tryCatch(summary(lme(fx, random=rnd, data=s$d))$tTable[, "DF"], error=function(e) NULL)
  out[[nm]] <- list(formula = paste(deparse(s$f), collapse=""), theta = getME(m, "theta"), REMLcrit = REMLcrit(m),
    sat = as.data.frame(sat), sat_ml = as.data.frame(coef(summary(mml))), theta_ml = getME(mml, "theta"), kr = as.data.frame(kr), names = rownames(sat),
    anova_sat = cbind(term=rownames(a3s), as.data.frame(a3s)), anova_kr = cbind(term=rownames(a3k), as.data.frame(a3k)),
    bw = as.list(bw))
  print(nm)
}
out$meta <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")), lmerTest = as.character(packageVersion("lmerTest")), pbkrtest = as.character(packageVersion("pbkrtest")), nlme = as.character(packageVersion("nlme")))
write(toJSON(out, digits=NA, auto_unbox=TRUE), "/tmp/fddf/rref.json")
