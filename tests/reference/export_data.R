# Export the real data sets used by the round-2 references to CSV
# (tests/reference/data/). Factors are written as text (labels that cannot be read
# as numbers where the column is used as a fixed-effect factor); derived columns
# (squares, dummies, sin/cos) are made here so that the suite's formulas need no
# formula functions. Provenance and licences: tests/reference/README.md.
#
# Usage (from the repo root): Rscript tests/reference/export_data.R

suppressPackageStartupMessages({ library(nlme); library(mlmRev); library(lme4) })
out <- "tests/reference/data"
dir.create(out, showWarnings = FALSE)

plain <- function(d) {
  d <- as.data.frame(d)
  for (nm in names(d)) if (is.factor(d[[nm]])) d[[nm]] <- as.character(d[[nm]])
  attributes(d)[setdiff(names(attributes(d)), c("names", "row.names", "class"))] <- NULL
  class(d) <- "data.frame"
  rownames(d) <- NULL
  d
}
w <- function(d, name) {
  write.csv(d, file.path(out, name), row.names = FALSE)
  cat(sprintf("%-22s %6d rows %8d bytes\n", name, nrow(d), file.size(file.path(out, name))))
}

d <- plain(BodyWeight); d$Diet <- paste0("d", d$Diet)
w(d[c("weight", "Time", "Diet", "Rat")], "bodyweight.csv")

d <- plain(Dialyzer); d$pressure2 <- d$pressure^2; d$QB <- paste0("q", d$QB)
w(d[c("rate", "pressure", "pressure2", "QB", "Subject")], "dialyzer.csv")

w(plain(IGF)[c("conc", "age", "Lot")], "igf.csv")

w(plain(Milk)[c("protein", "Time", "Diet", "Cow")], "milk.csv")

d <- plain(Wafer); d$voltage2 <- d$voltage^2
w(d[c("current", "voltage", "voltage2", "Wafer", "Site")], "wafer.csv")

d <- plain(Ovary); d$sin_t <- sin(2 * pi * d$Time); d$cos_t <- cos(2 * pi * d$Time)
w(d[c("follicles", "Time", "sin_t", "cos_t", "Mare")], "ovary.csv")

d <- plain(Machines)
d$MachineB <- as.integer(d$Machine == "B"); d$MachineC <- as.integer(d$Machine == "C")
w(d[c("score", "Machine", "MachineB", "MachineC", "Worker")], "machines.csv")

d <- plain(Orthodont); d$age_c <- d$age - 11
w(d[c("distance", "age", "age_c", "Sex", "Subject")], "orthodont.csv")

d <- plain(Loblolly); d$age2 <- d$age^2
w(d[c("height", "age", "age2", "Seed")], "loblolly.csv")

d <- plain(CO2); d$conc_dev <- (d$conc - 500) / 1000; d$log_conc <- log(d$conc)
w(d[c("uptake", "conc", "conc_dev", "log_conc", "Type", "Treatment", "Plant")], "co2.csv")
# a copy with spaces in two column names (backtick-quoted names in formulas)
d2 <- d[c("uptake", "conc_dev", "Type", "Plant")]
names(d2) <- c("uptake", "conc dev", "Type", "plant id")
w(d2, "co2_spaces.csv")

d <- plain(ChickWeight); d$Time2 <- d$Time^2; d$diet <- paste0("d", d$Diet)
d$Diet <- as.integer(d$Diet)
w(d[c("weight", "Time", "Time2", "Diet", "diet", "Chick")], "chickweight.csv")

w(plain(Rail)[c("travel", "Rail")], "rail.csv")

d <- plain(Chem97)
w(d[c("score", "gcsecnt", "gender", "school", "lea")], "chem97.csv")

w(plain(Exam)[c("normexam", "standLRT", "sex", "school")], "exam.csv")

w(plain(ScotsSec)[c("attain", "verbal", "sex", "primary", "second")], "scotssec.csv")

d <- plain(Oats); d$nitro2 <- d$nitro^2
w(d[c("yield", "nitro", "Variety", "Block")], "oats.csv")

d <- plain(Pixel); d$day2 <- d$day^2
w(d[c("pixel", "day", "day2", "Side", "Dog")], "pixel.csv")

# lme4 (GPL-2 | GPL-3) data tables: see README on redistribution
w(plain(Penicillin)[c("diameter", "plate", "sample")], "penicillin.csv")
w(plain(Pastes)[c("strength", "batch", "cask", "sample")], "pastes.csv")
w(plain(Dyestuff2)[c("Yield", "Batch")], "dyestuff2.csv")
