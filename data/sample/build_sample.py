"""Writes the bundled sample corpus (dclm_baseline.jsonl, finemath.jsonl) deterministically.

Every page is written for this project from templates whose numbers are computed here, so
the worked solutions are correct. Rows carry the real column names of DCLM-baseline and
FineMath. Run: ``python data/sample/build_sample.py`` (rewrites both files).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
R = random.Random(20251122)


def dclm_row(url: str, text: str) -> dict:
    words = len(text.split())
    return {
        "bff_contained_ngram_count_before_dedup": R.randint(0, 40),
        "language_id_whole_page_fasttext": {"en": round(R.uniform(0.80, 0.99), 4)},
        "metadata": {
            "Content-Length": str(len(text.encode()) + R.randint(2000, 9000)),
            "Content-Type": "application/http; msgtype=response",
            "WARC-Date": f"2023-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}T{R.randint(0, 23):02d}:14:07Z",
            "WARC-Record-ID": f"<urn:uuid:{R.getrandbits(128):032x}>",
            "WARC-Target-URI": url,
            "WARC-Type": "response",
        },
        "previous_word_count": words + R.randint(0, 300),
        "text": text,
        "url": url,
        "warcinfo": "isPartOf: CC-MAIN-2023-40\npublisher: Common Crawl\nformat: WARC File Format 1.1",
        "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob": round(R.uniform(0.01, 0.99), 5),
    }


def finemath_row(url: str, text: str, score: float) -> dict:
    return {
        "url": url,
        "fetch_time": 1690000000000 + R.randint(0, 10**10),
        "content_mime_type": "text/html",
        "warc_filename": f"crawl-data/CC-MAIN-2023-50/segments/1700679100{R.randint(100, 999)}.{R.randint(10, 99)}/warc/"
                         f"CC-MAIN-20231201{R.randint(100000, 999999)}-00{R.randint(100, 999)}.warc.gz",
        "warc_record_offset": R.randint(10**6, 10**9),
        "warc_record_length": R.randint(5000, 60000),
        "text": text,
        "token_count": int(len(text.split()) * 1.3),
        "char_count": len(text),
        "metadata": json.dumps({"lang": "en", "source": "finemath-sample"}),
        "score": score,
        "int_score": int(round(score)),
        "crawl": "CC-MAIN-2023-50",
        "snapshot_type": R.choice(["latest", "largest"]),
        "language": "en",
        "language_score": round(R.uniform(0.85, 0.99), 4),
    }


# --------------------------------------------------------------------------- DCLM-like reasoning pages


def projectile(i):
    v, ang = R.choice([18, 22, 25, 30, 35]), R.choice([30, 35, 40, 50, 60])
    g = 9.81
    th = math.radians(ang)
    t = 2 * v * math.sin(th) / g
    rng = v * v * math.sin(2 * th) / g
    h = (v * math.sin(th)) ** 2 / (2 * g)
    return (f"https://physicsforum-{i}.example.org/threads/projectile-range-question.{1000 + i}/",
            f"""Projectile range when launched at {ang} degrees - am I doing this right?

Posted by kinematics_kid:
A ball is kicked from level ground at {v} m/s at {ang} degrees above the horizontal. Ignore air resistance. I need the time of flight, the range and the maximum height, and my book's answer for the range does not match mine.

Reply from HallsofIvy_fan:
Split the launch velocity into components first. The horizontal part is v cos(theta) = {v} x cos({ang}) = {v * math.cos(th):.2f} m/s and the vertical part is v sin(theta) = {v * math.sin(th):.2f} m/s. Because gravity acts only vertically, the horizontal velocity stays constant for the whole flight.

The ball lands when the vertical displacement returns to zero: 0 = v_y t - (1/2) g t^2, so t = 2 v_y / g = 2 x {v * math.sin(th):.2f} / 9.81 = {t:.2f} s. The other root, t = 0, is the launch itself.

The range is therefore R = v_x t = {v * math.cos(th):.2f} x {t:.2f} = {rng:.1f} m. You can check this with the closed form R = v^2 sin(2 theta) / g = {v}^2 x sin({2 * ang}) / 9.81 = {rng:.1f} m, which agrees.

For the maximum height, the vertical velocity is zero at the top, so v_y^2 = 2 g H and H = v_y^2 / (2g) = {h:.2f} m.

Reply from kinematics_kid:
Thanks! My mistake was using sin(theta) instead of sin(2 theta) in the range formula. So the launch angle that maximises the range on level ground is 45 degrees because sin(2 theta) peaks at 90 degrees?

Reply from HallsofIvy_fan:
Exactly, and notice that {ang} and {90 - ang} degrees give the same range, since sin(2 x {ang}) = sin(2 x {90 - ang}). With air resistance the optimum angle drops below 45 degrees, because drag removes more horizontal distance from long, high flights. That is why the real-world optimum for a kicked ball is closer to 40 degrees.
""")


def rc_circuit(i):
    r_k, c_u = R.choice([4.7, 10, 22, 33, 47]), R.choice([10, 47, 100, 220])
    tau = r_k * 1e3 * c_u * 1e-6
    v0 = R.choice([5, 9, 12])
    t63 = tau
    t90 = -tau * math.log(0.1)
    return (f"https://eestack-{i}.example.com/questions/{5000 + i}/rc-charging-time",
            f"""How long does a capacitor take to reach 90% charge in an RC circuit?

Question: I have a {r_k} kOhm resistor in series with a {c_u} uF capacitor and a {v0} V supply. The capacitor starts discharged. How long until it is at 90% of the supply voltage, and why do people say it is "fully charged" after five time constants?

Answer (accepted, 41 votes):
The capacitor voltage obeys V(t) = V0 (1 - e^(-t/RC)). This comes from Kirchhoff's voltage law: V0 = i R + q / C, and since i = dq/dt you get a first-order linear differential equation whose solution is an exponential approach to V0.

The time constant is tau = R C = {r_k} x 10^3 Ohm x {c_u} x 10^-6 F = {tau:.4f} s. After one time constant the voltage is 1 - 1/e, about 63.2% of {v0} V, so {0.632 * v0:.2f} V at t = {t63:.4f} s.

For 90% we solve 0.9 = 1 - e^(-t/tau), hence e^(-t/tau) = 0.1 and t = tau ln(10) = {t90:.4f} s, i.e. about 2.3 time constants.

The "five time constants" rule: e^(-5) is about 0.0067, so after 5 tau the capacitor is within 0.7% of the supply. It never reaches V0 exactly in this ideal model; five tau is simply where the remaining difference is smaller than typical component tolerances (a 10% capacitor makes tau itself uncertain by 10%).

One more check: the initial current is V0 / R = {v0 / (r_k * 1e3) * 1000:.3f} mA, and it decays with the same time constant, which is a good sanity check with a scope: measure when the current falls to 37% of its initial value and you have tau directly.
""")


def tax_incidence(i):
    a, b = R.choice([100, 120, 150]), R.choice([2, 3, 4])
    c, d = R.choice([10, 20]), R.choice([1, 2])
    tax = R.choice([6, 9, 12])
    # demand P = a - b Q, supply P = c + d Q
    q0 = (a - c) / (b + d)
    p0 = a - b * q0
    q1 = (a - c - tax) / (b + d)
    pc = a - b * q1
    ps = pc - tax
    dwl = 0.5 * tax * (q0 - q1)
    return (f"https://econ-help-{i}.example.net/t/who-really-pays-a-per-unit-tax/{300 + i}",
            f"""Who really pays a per-unit tax? Worked example with linear curves

Our study group worked through this problem and wanted to check the reasoning.

Inverse demand: P = {a} - {b}Q. Inverse supply: P = {c} + {d}Q. The government imposes a tax of {tax} per unit collected from sellers.

Step 1, the equilibrium without the tax. Setting demand equal to supply: {a} - {b}Q = {c} + {d}Q, so Q = ({a} - {c}) / ({b} + {d}) = {q0:.2f} and P = {p0:.2f}.

Step 2, with the tax. Sellers now need P - {tax} to cover their supply price, so the supply curve shifts up: P = {c + tax} + {d}Q. Solving {a} - {b}Q = {c + tax} + {d}Q gives Q = {q1:.2f}. Buyers pay P_c = {pc:.2f} and sellers keep P_s = P_c - {tax} = {ps:.2f}.

Step 3, incidence. Buyers pay {pc - p0:.2f} more than before and sellers receive {p0 - ps:.2f} less. The shares are {100 * (pc - p0) / tax:.1f}% and {100 * (p0 - ps) / tax:.1f}%. This matches the rule that the burden falls on the less elastic side: the share borne by buyers equals d / (b + d) = {d}/{b + d} with linear curves, because the steeper curve (less elastic) absorbs more of the wedge.

Step 4, deadweight loss. The triangle between the curves from Q = {q1:.2f} to {q0:.2f} has area (1/2) x {tax} x ({q0:.2f} - {q1:.2f}) = {dwl:.2f}. Tax revenue is {tax} x {q1:.2f} = {tax * q1:.2f}.

A common mistake is to think that because sellers hand the tax to the government they bear all of it. Statutory incidence (who writes the cheque) and economic incidence (whose prices change) are different things; collecting the same tax from buyers gives exactly the same quantities and prices net of tax.
""")


def recurrence(i):
    a, b, k = R.choice([(2, 2, 1), (4, 2, 1), (3, 2, 1), (8, 2, 2), (2, 4, 1), (9, 3, 2)])
    crit = math.log(a, b)
    if abs(crit - k) < 1e-9:
        case, sol = "case 2", f"Theta(n^{k} log n)"
    elif crit > k:
        case, sol = "case 1", f"Theta(n^{crit:.3g})"
    else:
        case, sol = "case 3", f"Theta(n^{k})"
    return (f"https://cs-theory-{i}.example.org/q/{7000 + i}",
            f"""Solving T(n) = {a}T(n/{b}) + n^{k} - master theorem or recursion tree?

Asked: I am analysing a divide-and-conquer algorithm that splits an input of size n into {a} subproblems of size n/{b} and does n^{k} work to split and merge. What is the running time, and can someone show both the master theorem and the recursion-tree argument?

Answer:
Compare the work at the leaves with the work at the root. The recursion tree has depth log_{b} n, and level j has {a}^j nodes, each doing (n/{b}^j)^{k} work, so the total work at level j is n^{k} ({a}/{b}^{k})^j.

The critical exponent is log_b a = log_{b} {a} = {crit:.3f}. Since the non-recursive work is n^{k}, we compare {crit:.3f} with {k}:
- if log_b a > k, the geometric series grows with depth and the leaves dominate: Theta(n^(log_b a));
- if they are equal, every level does the same work and there are log n levels: Theta(n^k log n);
- if log_b a < k, the series shrinks and the root dominates: Theta(n^k), provided the regularity condition a f(n/b) <= c f(n) holds for some c < 1, which it does for polynomials.

Here we are in {case}, so T(n) = {sol}.

To double-check, unroll the first levels: level 0 costs n^{k}, level 1 costs {a} (n/{b})^{k} = n^{k} x {a / b ** k:.3g}, level 2 costs n^{k} x {(a / b ** k) ** 2:.3g}. The ratio {a / b ** k:.3g} is what decides which end of the tree dominates, which is exactly the comparison above.

Comment: worth noting that the master theorem does not apply when the subproblems have unequal sizes, e.g. T(n) = T(n/3) + T(2n/3) + n; there the recursion tree (or Akra-Bazzi) gives Theta(n log n).
""")


def bayes_test(i):
    prev, sens, spec = R.choice([0.001, 0.01, 0.02, 0.05]), R.choice([0.9, 0.95, 0.99]), R.choice([0.9, 0.95, 0.98])
    ppv = sens * prev / (sens * prev + (1 - spec) * (1 - prev))
    npv = spec * (1 - prev) / (spec * (1 - prev) + (1 - sens) * prev)
    return (f"https://med-students-{i}.example.org/forum/screening-test-ppv-{i}",
            f"""Why is a positive screening result usually a false alarm? (worked example)

Case from our epidemiology tutorial: a disease has prevalence {prev * 100:g}% in the screened population. The test has sensitivity {sens * 100:g}% and specificity {spec * 100:g}%. A patient tests positive. What is the probability that the patient actually has the disease?

Take 100,000 people, because whole numbers make the reasoning easier to follow.
- Diseased: {prev * 100000:.0f}. Of these, {sens * 100:g}% test positive: {sens * prev * 100000:.1f} true positives.
- Healthy: {(1 - prev) * 100000:.0f}. Of these, {(1 - spec) * 100:g}% test positive anyway: {(1 - spec) * (1 - prev) * 100000:.1f} false positives.

The positive predictive value is true positives divided by all positives: {sens * prev * 100000:.1f} / ({sens * prev * 100000:.1f} + {(1 - spec) * (1 - prev) * 100000:.1f}) = {ppv:.3f}, so about {ppv * 100:.1f}%.

This is Bayes' theorem: P(D|+) = P(+|D) P(D) / [P(+|D) P(D) + P(+|not D) P(not D)]. Because the prevalence is low, the false positives from the large healthy group outnumber the true positives even though the test is accurate.

The negative predictive value is {npv:.5f}, so a negative result is very reassuring. That asymmetry is why screening is followed by a confirmatory test with higher specificity: applied only to the positives, the confirmatory test starts from a prior of {ppv * 100:.1f}% instead of {prev * 100:g}%, and its own positive predictive value is much higher.

Clinical takeaway: never interpret a test result without the pre-test probability. The same test used in a symptomatic clinic population, where prevalence might be 30%, would give a completely different PPV.
""")


def half_life(i):
    t_half, dose, tau = R.choice([4, 6, 8, 12]), R.choice([100, 250, 500]), R.choice([6, 8, 12, 24])
    k = math.log(2) / t_half
    acc = 1 / (1 - math.exp(-k * tau))
    return (f"https://pharmacology-notes-{i}.example.edu/dosing/accumulation-{i}",
            f"""Drug accumulation with repeated dosing: working through the accumulation factor

A drug with first-order elimination has a half-life of {t_half} h. A patient receives {dose} mg every {tau} h. Assume instantaneous absorption and a volume of distribution that does not change. How much drug is in the body just after the steady-state dose, and how long does it take to get there?

The elimination rate constant is k = ln 2 / t_half = 0.693 / {t_half} = {k:.4f} per hour. Between doses the amount falls by the factor e^(-k tau) = e^(-{k:.4f} x {tau}) = {math.exp(-k * tau):.4f}.

After the first dose the peak is {dose} mg; just before the second dose {dose * math.exp(-k * tau):.1f} mg remain, so the second peak is {dose} + {dose * math.exp(-k * tau):.1f} mg. Continuing, the peaks form a geometric series whose limit is dose / (1 - e^(-k tau)). The accumulation factor is therefore 1 / (1 - {math.exp(-k * tau):.4f}) = {acc:.3f}, and the steady-state peak is {dose * acc:.1f} mg, with a trough of {dose * acc * math.exp(-k * tau):.1f} mg.

Time to steady state depends only on the half-life, not on the dose or the interval: after n half-lives the body has reached 1 - (1/2)^n of the steady-state level. Four to five half-lives, {4 * t_half}-{5 * t_half} h here, gets within 94-97%.

Why this matters clinically: if a faster effect is needed, a loading dose equal to the steady-state peak ({dose * acc:.0f} mg) can be given first, followed by the maintenance dose. Doubling the maintenance dose does not shorten the time to steady state; it only doubles the level reached, which is a frequent misconception.
""")


def negligence(i):
    facts = R.choice([
        ("a supermarket left a spill of cooking oil in an aisle for forty minutes", "a shopper slipped and broke a wrist",
         "staff inspections were scheduled every fifteen minutes but were skipped"),
        ("a landlord ignored three written reports of a loose stair railing", "a tenant's guest fell and was injured",
         "the repair would have cost about eighty dollars"),
        ("a cyclist rode at night without lights on an unlit road", "a pedestrian crossing the road was struck",
         "local law requires front and rear lights after sunset"),
    ])
    return (f"https://lawstudents-{i}.example.org/discussion/negligence-analysis-{i}",
            f"""Applying the four elements of negligence to a fact pattern (study group write-up)

Facts: {facts[0]}; {facts[1]}; {facts[2]}. Is the defendant liable in negligence?

We worked through the elements in order, because a claim fails if any one of them is missing.

1. Duty. Does the defendant owe the injured person a duty of care? Occupiers owe lawful visitors a duty of reasonable care, and road users owe one another a duty to take care. The relationship here falls within an established category, so duty is satisfied without needing a novel-duty analysis.

2. Breach. Did the conduct fall below the standard of a reasonable person in the defendant's position? We weighed the probability of harm, the severity of harm, and the burden of precautions. Because {facts[2]}, the burden of precaution was small compared with a foreseeable risk of serious injury, which points strongly to breach. A statute or internal rule is not conclusive, but it is evidence of the standard of care.

3. Causation. Factual causation uses the but-for test: but for the breach, would the injury have happened? On these facts, a timely inspection, repair or light would probably have prevented it. Legal (proximate) causation asks whether the type of harm was foreseeable; a fall or a collision is exactly the kind of harm the precaution was meant to prevent, so there is no remoteness problem.

4. Damage. There is actual physical injury, which is recoverable.

Defences: we considered contributory negligence. If the injured person was distracted or careless, damages may be reduced in proportion to their share of responsibility in a comparative-fault jurisdiction, but that does not defeat the claim. Therefore the most likely outcome is liability with a possible reduction for comparative fault.
""")


def confidence_interval(i):
    n, mean, sd = R.choice([16, 25, 36, 49]), R.choice([72.4, 101.3, 5.8, 250.0]), R.choice([4.0, 8.5, 1.2, 30.0])
    tcrit = {16: 2.131, 25: 2.064, 36: 2.030, 49: 2.011}[n]
    se = sd / math.sqrt(n)
    return (f"https://stats-help-{i}.example.com/questions/{9000 + i}/t-interval",
            f"""95% confidence interval for a mean: t or z, and what does it mean?

A sample of n = {n} measurements has mean {mean} and sample standard deviation {sd}. Construct a 95% confidence interval for the population mean and interpret it.

Answer: The population standard deviation is unknown, so we use the t distribution with n - 1 = {n - 1} degrees of freedom rather than the normal. The standard error is s / sqrt(n) = {sd} / {math.sqrt(n):.0f} = {se:.4f}. The critical value t_0.975,{n - 1} = {tcrit}.

The margin of error is {tcrit} x {se:.4f} = {tcrit * se:.4f}, so the interval is {mean} plus or minus {tcrit * se:.4f}, i.e. ({mean - tcrit * se:.3f}, {mean + tcrit * se:.3f}).

Interpretation: the procedure captures the true mean in 95% of repeated samples. It is not correct to say there is a 95% probability that this particular interval contains the mean; the mean is fixed and the interval is what varies.

Why t and not z: with the z value 1.96 the interval would be narrower ({mean - 1.96 * se:.3f}, {mean + 1.96 * se:.3f}), which understates the uncertainty because s itself is estimated. As n grows the t critical value approaches 1.96 and the difference disappears. The method assumes the data are roughly normal or n is large enough for the central limit theorem; with a strongly skewed sample of {n} you should check a plot first.
""")


def limiting_reagent(i):
    m_h2, m_o2 = R.choice([4.0, 6.0, 10.0]), R.choice([16.0, 32.0, 64.0, 48.0])
    n_h2, n_o2 = m_h2 / 2.016, m_o2 / 32.00
    limiting = "hydrogen" if n_h2 / 2 < n_o2 else "oxygen"
    n_water = n_h2 if limiting == "hydrogen" else 2 * n_o2
    return (f"https://chem-forum-{i}.example.org/threads/limiting-reagent-{i}",
            f"""Limiting reagent in the synthesis of water - which one runs out?

Problem: {m_h2} g of hydrogen gas reacts with {m_o2} g of oxygen gas to form water. Which reactant is limiting, how much water forms, and how much of the excess reactant is left?

Reply: Start from the balanced equation, 2 H2 + O2 -> 2 H2O. Convert masses to moles, because the equation relates moles, not grams.
n(H2) = {m_h2} / 2.016 = {n_h2:.3f} mol and n(O2) = {m_o2} / 32.00 = {n_o2:.3f} mol.

Divide each by its coefficient: H2 gives {n_h2 / 2:.3f} and O2 gives {n_o2:.3f}. The smaller value identifies the limiting reagent, so {limiting} runs out first.

Water formed: {n_water:.3f} mol, which is {n_water * 18.015:.2f} g.

Excess: {"oxygen" if limiting == "hydrogen" else "hydrogen"} remains. {"Oxygen used = " + f"{n_h2 / 2:.3f} mol, so {n_o2 - n_h2 / 2:.3f} mol ({(n_o2 - n_h2 / 2) * 32:.2f} g) is left." if limiting == "hydrogen" else "Hydrogen used = " + f"{2 * n_o2:.3f} mol, so {n_h2 - 2 * n_o2:.3f} mol ({(n_h2 - 2 * n_o2) * 2.016:.2f} g) is left."}

Check by mass conservation: the mass of water plus the leftover reactant must equal {m_h2 + m_o2:.1f} g, which it does within rounding. A quick sanity check like this catches most slips in molar masses.
""")


def npv_project(i):
    invest, cf, years, rate = R.choice([1000, 5000, 12000]), R.choice([300, 1500, 3500]), R.choice([4, 5, 6]), R.choice([0.06, 0.08, 0.1])
    annuity = (1 - (1 + rate) ** -years) / rate
    npv = -invest + cf * annuity
    return (f"https://finance-qa-{i}.example.com/q/npv-decision-{i}",
            f"""Should we take the project? NPV with a constant cash flow

A project costs {invest} today and returns {cf} at the end of each of the next {years} years. The discount rate is {rate * 100:g}%. Compute the net present value and decide.

Discount each cash flow: the present value of {cf} received in year t is {cf} / (1 + {rate})^t. Because the flows are equal, use the annuity factor (1 - (1 + r)^-n) / r = (1 - {1 + rate}^-{years}) / {rate} = {annuity:.4f}.

PV of inflows = {cf} x {annuity:.4f} = {cf * annuity:.2f}. NPV = {cf * annuity:.2f} - {invest} = {npv:.2f}.

Decision: {"accept, since the NPV is positive and the project adds value at this cost of capital" if npv > 0 else "reject, since the NPV is negative: the project destroys value at this cost of capital"}. Note that the simple payback period, {invest / cf:.2f} years, ignores the time value of money and should not drive the decision; it can only serve as a rough liquidity check. The internal rate of return is the rate at which the NPV is zero; {"it is above" if npv > 0 else "it is below"} {rate * 100:g}% here, which gives the same answer for a conventional project with one sign change in its cash flows.
""")


def hardy_weinberg(i):
    q2 = R.choice([0.04, 0.09, 0.16, 0.01, 0.0025])
    q = math.sqrt(q2)
    p = 1 - q
    return (f"https://bio-stack-{i}.example.org/questions/hardy-weinberg-carriers-{i}",
            f"""Estimating carrier frequency from the number of affected people (Hardy-Weinberg)

A recessive condition affects {q2 * 100:g}% of a population. Assuming Hardy-Weinberg equilibrium, what fraction of the population are carriers?

Answer: The affected individuals are homozygous recessive, so q^2 = {q2}. Therefore q = sqrt({q2}) = {q:.3f}, and because there are only two alleles, p = 1 - q = {p:.3f}.

Carriers are heterozygotes with frequency 2pq = 2 x {p:.3f} x {q:.3f} = {2 * p * q:.4f}, i.e. about {2 * p * q * 100:.1f}% of the population. That is {2 * p * q / q2:.1f} times as many carriers as affected people, which shows why recessive alleles persist: most copies sit in heterozygotes, where selection cannot see them.

The assumptions matter: random mating, no selection, no mutation, no migration and a large population. Consanguinity, for example, raises the frequency of homozygotes above q^2, so an estimate of q from the affected fraction would then be too high.
""")


REASONING_TEMPLATES = [projectile, rc_circuit, tax_incidence, recurrence, bayes_test, half_life, negligence,
                       confidence_interval, limiting_reagent, npv_project, hardy_weinberg]

HOWTO = [
    ("How to repot a root-bound houseplant", "Water the plant a day before. Choose a pot one size larger with a drainage hole. Tip the plant out, loosen the circling roots with your fingers, add fresh potting mix to the bottom, set the plant at the same depth as before, fill around it and water until it drains. Keep it out of strong sun for a week."),
    ("Easy weeknight lentil soup", "Soften an onion, two carrots and two celery sticks in olive oil for eight minutes. Add garlic, cumin and smoked paprika, then one cup of rinsed red lentils and five cups of stock. Simmer twenty minutes, stir in lemon juice and spinach, and season to taste. Serves four."),
    ("Fixing a squeaky door hinge", "Lift the hinge pin out with a nail and hammer from below. Clean the pin with steel wool, coat it lightly with white lithium grease or petroleum jelly, and tap it back in. Swing the door a few times to spread the grease and wipe off any excess."),
    ("Packing list for a weekend hiking trip", "Bring a rain shell, an insulating layer, a headlamp, a first-aid kit, a map, two litres of water per person, snacks, sunscreen and a small knife. Tell someone your route and your expected return time before you set off."),
    ("How to adjust bicycle brakes", "Squeeze the lever: if it touches the handlebar, turn the barrel adjuster anticlockwise a few turns. Check that the pads hit the rim squarely and not the tyre, loosen the pad bolt to realign them, and retighten. Test the brakes at walking speed before riding."),
    ("Making cold brew coffee at home", "Combine one part coarsely ground coffee with eight parts cold water in a jar, stir, cover and leave in the fridge for 16 to 18 hours. Strain through a paper filter and dilute with water or milk to taste. It keeps for about a week."),
    ("Cleaning a cast iron pan", "Rinse with hot water while the pan is still warm and scrub with a brush; a little soap is fine. Dry it on the stove, then rub a thin film of oil over the surface and heat until it just smokes. Never leave it to soak."),
    ("Setting up a home Wi-Fi guest network", "Log in to the router's admin page, find the guest network option, give it its own name and password, and turn on client isolation so guests cannot see your devices. Restart the router if the new network does not appear."),
    ("How to remove a red wine stain", "Blot, do not rub. Pour cold water on the stain and blot again, then cover it with a paste of baking soda and water and let it dry. Wash the fabric on the coldest setting the label allows and check before putting it in the dryer."),
    ("Winterising outdoor taps", "Shut off the indoor valve that feeds the outside tap, open the outside tap to drain it, and leave it open over winter. Fit an insulated cover if the tap is exposed to wind."),
    ("Simple sourdough discard crackers", "Mix one cup of discard with a quarter cup of melted butter, half a cup of flour and salt. Roll thinly between baking paper, score into squares, sprinkle with herbs and bake at 175 C for 25 minutes until crisp."),
    ("How to descale a kettle", "Fill the kettle halfway with equal parts water and white vinegar, bring to the boil and leave for an hour. Pour out, rinse well and boil fresh water twice to remove the smell."),
]

NEWS = [
    ("Council approves new cycle lanes for the city centre", "The city council voted 14 to 6 on Tuesday to build protected cycle lanes on three central streets. Construction is expected to start in spring and take about eight months. Local businesses raised concerns about delivery access, and the council said loading bays would be kept at both ends of each street."),
    ("Regional library extends weekend opening hours", "Starting next month the regional library will stay open until 8 pm on Saturdays and open on Sunday afternoons. The change follows a survey in which two thirds of respondents asked for longer weekend hours."),
    ("Storm causes power cuts across coastal towns", "High winds overnight brought down trees and power lines, leaving about 12,000 homes without electricity. The utility said most customers should be reconnected by the evening and asked residents to stay away from fallen cables."),
    ("Local team wins county football final", "A late header in the 88th minute gave the home side a 2-1 win in the county final on Sunday in front of a crowd of 3,400. The coach praised the squad's fitness after three matches in eight days."),
    ("Farmers' market moves to a new site", "The weekly farmers' market will move from the old car park to the riverside square from next week. Organisers said the new site has space for twenty more stalls and better access for wheelchair users."),
    ("University opens new research greenhouse", "The university opened a climate-controlled greenhouse that will be used to study drought-tolerant crop varieties. The facility was funded by a mix of public grants and industry partners."),
    ("Rail operator announces timetable changes", "From the first of the month, two early morning services will be withdrawn and an extra evening train added on weekdays. The operator said the change reflects passenger numbers since last year."),
    ("Museum to display restored nineteenth-century clock", "After two years of restoration, the town museum will put its 1870s astronomical clock back on display. Volunteers replaced worn gears by hand using drawings found in the museum archive."),
]

SPAM = [
    "Home | About | Services | Contact | Login | Register\nCopyright 2023 All rights reserved. Privacy Policy | Terms of Use | Cookie Settings\nFollow us on social media",
    "We use cookies to improve your experience. By continuing to browse you agree to our use of cookies. Accept all | Reject non-essential | Manage preferences",
    "BEST CHEAP WATCHES replica watches cheap watches buy watches online discount watches free shipping watches sale watches best price watches buy now",
    "Click here to claim your prize!!! You have been selected as our lucky winner. Enter your card details to receive your free gift. Limited time offer, act now.",
    "Page not found. The page you are looking for might have been removed, had its name changed, or is temporarily unavailable. Return to homepage.",
    "Tags: loans, fast loans, payday loans, loans online, quick loans, instant loans, best loans, cheap loans, loans today, loans now, loans near me",
    "Sign up for our newsletter! Enter your email address below. Subscribe. Unsubscribe at any time. Related posts: Top 10 tips | 5 things you did not know | Read more",
    "Archives: January 2019 (3) February 2019 (5) March 2019 (2) April 2019 (7) May 2019 (1) Categories: Uncategorized (18) Meta: Log in Entries feed Comments feed",
]

MISC = [
    ("https://gardenchat.example.net/t/tomato-leaves-curling", "Tomato leaves curling upwards in July?\n\nMy tomato plants have leaves curling up at the edges since the heatwave started. No spots, fruit looks fine. Should I worry?\n\nReply: Leaf roll from heat and irregular watering is common and mostly harmless. Water deeply in the morning and mulch to keep the soil moisture even."),
    ("https://reviews.example.shop/headphones/model-x200", "X200 wireless headphones review\n\nBattery lasted about 28 hours in my testing, close to the advertised 30. The bass is strong, maybe too strong for podcasts. The ear cushions get warm after an hour. Four stars for the price."),
    ("https://events.example.town/calendar/summer-fair", "Summer fair - Saturday 12 August, 10am to 5pm, Memorial Park. Food stalls, a dog show at 2pm, live music from local bands and a craft tent for children. Free entry; parking at the leisure centre."),
    ("https://petforum.example.org/threads/cat-not-eating", "Cat not eating since we moved house\n\nOur cat has barely eaten for two days since the move. She hides under the bed. Is this normal?\n\nReply: Stress after a move is very common, but a cat that does not eat for more than a day or two should see a vet, because fasting can cause liver problems in cats."),
    ("https://travelnotes.example.blog/lisbon-three-days", "Three days in Lisbon\n\nDay one: Alfama and the castle, then sunset at a miradouro. Day two: Belem, the monastery and the famous custard tarts. Day three: a train to Sintra. Wear comfortable shoes; the hills are steep and the pavements slippery."),
    ("https://carforum.example.com/threads/strange-noise-when-braking", "Grinding noise when braking\n\nI hear a grinding sound from the front left wheel when I brake. Reply: Grinding usually means the pads are worn down to the metal backing plate. Stop driving it if you can and get the pads and probably the discs replaced."),
    ("https://bookclub.example.org/posts/march-pick", "March book club pick\n\nThis month we are reading a novel about a lighthouse keeper on a remote island. Meeting on the last Thursday at the cafe on Mill Street. New members welcome; no need to finish the book."),
    ("https://parenting.example.net/q/toddler-sleep-regression", "Toddler sleep regression at 18 months\n\nOur daughter suddenly wakes twice a night. Reply: Many parents see this around 18 months with teething and new skills like walking. Keep the bedtime routine consistent and it usually passes within a few weeks."),
    ("https://diyforum.example.com/t/painting-over-gloss", "Can I paint emulsion over gloss?\n\nReply: Not directly; it will peel. Sand the gloss to dull it, wipe off the dust, apply a primer suitable for glossy surfaces, then your topcoat."),
    ("https://jobs.example.work/listing/warehouse-operative", "Warehouse operative - full time\n\nPicking and packing orders, loading vans and keeping the warehouse tidy. Shifts 6am-2pm or 2pm-10pm. Forklift licence an advantage. Apply online with your CV."),
    ("https://music.example.fm/blog/best-albums-of-the-year", "Our favourite albums of the year\n\nA jazz trio's live record, a folk singer's debut recorded in a kitchen, and a synth-pop comeback lead our list. Honourable mentions go to two punk bands who released albums in the same week."),
    ("https://fitness.example.club/articles/couch-to-5k-week-3", "Couch to 5k: week three\n\nThis week alternates 90 seconds of running with 90 seconds of walking, then three minutes of each, repeated twice. Warm up with a brisk five-minute walk and do not worry about speed."),
    ("https://hoa.example.org/notices/pool-closure", "Notice: the community pool will close from 3 to 10 July for resurfacing. We apologise for the inconvenience. The gym and tennis courts stay open as usual."),
    ("https://photography.example.net/forum/low-light-settings", "Settings for indoor low-light photos\n\nReply: Open the aperture as wide as the lens allows, raise ISO until the shutter speed is at least 1/focal length, and shoot in RAW so you can recover shadows later."),
    ("https://astro.example.org/forum/why-is-the-sky-dark", "Why is the night sky dark if the universe is full of stars?\n\nReply: This is Olbers' paradox. The universe has a finite age, so light from very distant stars has not reached us yet, and the expansion of space redshifts distant light out of the visible range."),
    ("https://knitting.example.net/patterns/simple-scarf", "Simple garter-stitch scarf\n\nCast on 30 stitches with chunky yarn on 8 mm needles. Knit every row until the scarf is 150 cm long, then cast off loosely and weave in the ends."),
    ("https://weather.example.gov/forecast/weekend", "Weekend forecast: a dry and bright Saturday with highs of 21 C, then cloud thickening on Sunday with showers spreading from the west by the afternoon. Winds light."),
    ("https://gamingforum.example.com/t/best-starting-class", "Best starting class for a new player?\n\nReply: The warrior is forgiving because it has more health and simple skills. Once you understand dodging and stamina, try the mage for a different play style."),
    ("https://realestate.example.homes/listing/2-bed-flat", "Two-bedroom flat, second floor, 68 square metres. Open-plan kitchen and living room, south-facing balcony, allocated parking. Ten minutes' walk to the station. Available from September."),
    ("https://recipes.example.kitchen/banana-bread", "Banana bread\n\nMash three ripe bananas, mix with 75 g melted butter, 150 g sugar, one egg and a teaspoon of vanilla. Fold in 190 g flour with a teaspoon of baking soda and a pinch of salt. Bake at 175 C for about an hour."),
    ("https://linuxhelp.example.org/q/disk-full", "Disk full but I cannot find the large files\n\nReply: Run du -sh on the top-level folders to find where the space went. Also check for deleted files still held open by a process with lsof; the space is freed only when the process closes them."),
    ("https://history.example.edu/blog/printing-press", "How the printing press changed Europe\n\nMovable type made books far cheaper in the decades after 1450. Literacy spread, vernacular languages gained standard spellings, and ideas travelled faster than authorities could control them."),
    ("https://volunteer.example.org/opportunities/food-bank", "Volunteers needed at the food bank on Tuesday and Thursday mornings to sort donations and pack parcels. No experience required; training is given on the first day."),
    ("https://aquarium.example.net/forum/cloudy-water", "Cloudy water in a new aquarium\n\nReply: A milky haze in the first weeks is usually a bacterial bloom while the filter matures. Do not add more fish yet, test ammonia and nitrite, and do small water changes."),
    ("https://smallbiz.example.com/advice/first-invoice", "Sending your first invoice\n\nInclude your business name and contact details, the client's details, an invoice number, the date, a clear description of the work, the amount, payment terms and how to pay. Keep a copy for your records."),
    ("https://cycling.example.club/routes/river-loop", "River loop, 32 km\n\nStart at the bridge car park, follow the towpath east to the lock, cross and return along the quiet lanes on the north bank. Mostly flat, one short climb near the church."),
    ("https://language.example.school/tips/spanish-verbs", "Learning Spanish verbs\n\nStart with the present tense of the regular -ar, -er and -ir verbs, then learn ser, estar, tener, ir and hacer, which are irregular and used constantly. Practise with short daily sentences rather than long lists."),
    ("https://astronomy-club.example.org/events/meteor-shower", "Meteor shower viewing night\n\nJoin us at the observatory field from 10 pm on the 12th. Bring a reclining chair and warm clothes; let your eyes adapt to the dark for twenty minutes. No telescopes needed."),
    ("https://homebrew.example.org/threads/stuck-fermentation", "Stuck fermentation at 1.020\n\nReply: Check the temperature first; many ale yeasts stall below 17 C. Gently rouse the yeast by swirling, move the fermenter somewhere warmer, and wait a few days before pitching more yeast."),
]

TRIVIAL_MATH = [
    "Prime numbers below 50: 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47. There are 15 of them.",
    "Area of a circle: A = pi r^2. For r = 3 cm, A = 9 pi, about 28.27 square centimetres.",
    "Is 5, 12, 13 a Pythagorean triple? 5^2 + 12^2 = 25 + 144 = 169 = 13^2. Yes.",
    "Order of operations: 3 + 4 x 2 = 3 + 8 = 11, not 14, because multiplication comes before addition.",
    "Converting 0.375 to a fraction: 0.375 = 375/1000 = 3/8.",
    "Perimeter of a rectangle 7 m by 4 m: 2 x (7 + 4) = 22 m.",
    "Rounding 3.14159 to two decimal places gives 3.14.",
    "The mean of 4, 8, 15, 16, 23, 42 is 108 / 6 = 18.",
    "Simplify 18/24: divide top and bottom by 6 to get 3/4.",
    "Roman numerals: XIV = 14, XL = 40, MCMXC = 1990.",
    "Speed = distance / time. 150 km in 2.5 hours is 60 km/h.",
    "Square roots to learn: sqrt(49) = 7, sqrt(64) = 8, sqrt(81) = 9, sqrt(100) = 10, sqrt(144) = 12.",
    "Angles in a triangle add up to 180 degrees. If two angles are 50 and 60 degrees, the third is 70 degrees.",
    "Negative numbers: -3 - 5 = -8, and -3 x -5 = 15.",
    "Time conversion: 2.75 hours is 2 hours and 45 minutes.",
]

MORE_DEEP = [
    ("euclid-gcd", """Finding gcd(1071, 462) with the Euclidean algorithm, and Bezout coefficients

The Euclidean algorithm rests on one fact: gcd(a, b) = gcd(b, a mod b), because any common divisor of a and b also divides a - qb.

1071 = 2 x 462 + 147
462 = 3 x 147 + 21
147 = 7 x 21 + 0

The last non-zero remainder is 21, so gcd(1071, 462) = 21.

Working backwards gives integers x, y with 1071x + 462y = 21: from the second line, 21 = 462 - 3 x 147, and from the first, 147 = 1071 - 2 x 462. Substituting, 21 = 462 - 3(1071 - 2 x 462) = 7 x 462 - 3 x 1071. So x = -3 and y = 7. Check: -3213 + 3234 = 21."""),
    ("derangements", """How many ways can 5 letters go into 5 envelopes so that none is in the right one?

Such a permutation is a derangement. Let D(n) count them. Consider where letter 1 goes: to envelope k, for one of n - 1 choices. Either letter k goes to envelope 1, leaving a derangement of n - 2 items, or it does not, which is equivalent to a derangement of n - 1 items. Hence D(n) = (n - 1)(D(n-1) + D(n-2)), with D(1) = 0 and D(2) = 1.

D(3) = 2(1 + 0) = 2, D(4) = 3(2 + 1) = 9, D(5) = 4(9 + 2) = 44.

Inclusion-exclusion gives the same: D(5) = 5!(1 - 1 + 1/2 - 1/6 + 1/24 - 1/120) = 120 - 120 + 60 - 20 + 5 - 1 = 44. The probability that a random assignment is a derangement is 44/120, about 0.367, already close to 1/e."""),
    ("expected-wait", """Expected number of rolls until the first six

Let N be the number of rolls of a fair die up to and including the first six. N is geometric with p = 1/6: P(N = k) = (5/6)^(k-1) (1/6).

First-step analysis: with probability 1/6 the first roll is a six and N = 1; otherwise we have used one roll and are back where we started. So E[N] = 1 + (5/6) E[N], which gives E[N] = 6.

The same result from the series: E[N] = sum k (5/6)^(k-1)(1/6) = (1/6) / (1 - 5/6)^2 = 6, using sum k x^(k-1) = 1/(1-x)^2 for |x| < 1.

The variance is (1 - p)/p^2 = (5/6)/(1/36) = 30, so the waiting time is very spread out: a standard deviation of about 5.5 rolls."""),
    ("epsilon-delta", """Epsilon-delta proof that the limit of 3x + 1 as x approaches 2 is 7

We must show: for every epsilon > 0 there is a delta > 0 such that 0 < |x - 2| < delta implies |(3x + 1) - 7| < epsilon.

Scratch work: |(3x + 1) - 7| = |3x - 6| = 3|x - 2|. We want 3|x - 2| < epsilon, i.e. |x - 2| < epsilon/3.

Proof: let epsilon > 0 and choose delta = epsilon/3. If 0 < |x - 2| < delta, then |(3x + 1) - 7| = 3|x - 2| < 3 delta = epsilon. Therefore the limit is 7.

For a non-linear function such as x^2 near 2 the same idea needs a bound on the extra factor: |x^2 - 4| = |x - 2||x + 2|, and restricting delta <= 1 gives |x + 2| < 5, so delta = min(1, epsilon/5) works."""),
    ("cramer", """Solving 2x + 3y = 8 and 5x - y = 3 with Cramer's rule

The coefficient matrix has determinant D = (2)(-1) - (3)(5) = -2 - 15 = -17, which is non-zero, so there is a unique solution.

Replace the x-column by the constants: D_x = (8)(-1) - (3)(3) = -8 - 9 = -17. Replace the y-column: D_y = (2)(3) - (8)(5) = 6 - 40 = -34.

x = D_x / D = 1 and y = D_y / D = 2.

Check: 2(1) + 3(2) = 8 and 5(1) - 2 = 3. Both equations hold. Elimination gives the same: multiply the second equation by 3 and add to the first: 17x = 17."""),
    ("binomial", """Probability of exactly 3 heads in 8 tosses of a biased coin with P(heads) = 0.3

Each toss is independent with the same probability, so the number of heads X is binomial with n = 8 and p = 0.3.

P(X = 3) = C(8, 3) (0.3)^3 (0.7)^5. C(8, 3) = 56 counts the positions of the three heads. (0.3)^3 = 0.027 and (0.7)^5 = 0.16807.

P(X = 3) = 56 x 0.027 x 0.16807 = 0.2541 (to four places).

The mean is np = 2.4 and the variance np(1 - p) = 1.68. The most likely count is floor((n + 1)p) = floor(2.7) = 2, with P(X = 2) = 28 x 0.09 x 0.117649 = 0.2965, a little higher than P(X = 3)."""),
    ("catalan", """Counting balanced strings of 4 pairs of parentheses

Let C_n be the number of balanced strings with n pairs. Split a string at the partner of its first open bracket: ( A ) B, where A has k pairs and B has n - 1 - k pairs. Hence C_n = sum over k of C_k C_(n-1-k), with C_0 = 1.

C_1 = 1, C_2 = 2, C_3 = C_0 C_2 + C_1 C_1 + C_2 C_0 = 5, C_4 = C_0 C_3 + C_1 C_2 + C_2 C_1 + C_3 C_0 = 5 + 2 + 2 + 5 = 14.

The closed form C_n = (1/(n+1)) C(2n, n) agrees: C(8, 4)/5 = 70/5 = 14. The reflection argument explains the formula: of the C(2n, n) strings with n of each bracket, exactly C(2n, n+1) ever dip below zero."""),
    ("area-between-curves", """Area between y = x and y = x^2

The curves meet where x = x^2, i.e. x = 0 and x = 1. On (0, 1) the line lies above the parabola, since x - x^2 = x(1 - x) > 0 there.

Area = integral from 0 to 1 of (x - x^2) dx = [x^2/2 - x^3/3] from 0 to 1 = 1/2 - 1/3 = 1/6.

Integrating with respect to y instead: for y in (0, 1) the region runs from x = y to x = sqrt(y), so the area is the integral of (sqrt(y) - y) dy = 2/3 - 1/2 = 1/6, the same answer."""),
    ("law-of-cosines", """Finding the third side and the angles of a triangle with sides 7 and 10 and an included angle of 60 degrees

The law of cosines: c^2 = a^2 + b^2 - 2ab cos C = 49 + 100 - 2(7)(10)(0.5) = 149 - 70 = 79, so c = sqrt(79), about 8.888.

Next, the angle opposite the side of length 7, using the law of sines: sin A = 7 sin 60 / 8.888 = 7 x 0.8660 / 8.888 = 0.6820, so A is about 43.0 degrees. (A is opposite the shortest side, so it is acute and the sine gives no ambiguity.)

The third angle is 180 - 60 - 43.0 = 77.0 degrees. Check with the law of cosines for B: cos B = (49 + 79 - 100)/(2 x 7 x 8.888) = 28 / 124.4 = 0.2250, so B is about 77.0 degrees."""),
    ("sum-of-squares", """Sum of the first n squares: deriving n(n+1)(2n+1)/6

Use the telescoping identity (k + 1)^3 - k^3 = 3k^2 + 3k + 1. Summing from k = 1 to n, the left side telescopes to (n + 1)^3 - 1.

So (n + 1)^3 - 1 = 3S + 3 n(n+1)/2 + n, where S is the sum of squares. Solving, 3S = (n + 1)^3 - 1 - n - 3n(n+1)/2, and simplifying the right side gives n(n+1)(2n+1)/2, hence S = n(n+1)(2n+1)/6.

Check for n = 4: 1 + 4 + 9 + 16 = 30 and 4 x 5 x 9 / 6 = 30."""),
]


def perturb(text: str, extra_header: str) -> str:
    """A re-post of a page: a new header, a comment at the end, a few words changed."""
    swaps = {"therefore": "so", "Because": "Since", "first": "initially", "exactly": "precisely"}
    out = text
    for a, b in list(swaps.items())[:3]:
        out = out.replace(a, b, 1)
    return f"{extra_header}\n\n{out}\nComment: this was reposted from another forum, thanks to the original author."


def build_dclm() -> list[dict]:
    rows = []
    reasoning = []
    for i in range(len(REASONING_TEMPLATES)):
        url, text = REASONING_TEMPLATES[i](i)
        reasoning.append((url, text))
        rows.append(dclm_row(url, text))
    for j, (title, body) in enumerate(HOWTO):
        rows.append(dclm_row(f"https://howto-{j}.example.com/guides/{title.lower().replace(' ', '-')}",
                             f"{title}\n\n{body}\n\nWas this guide helpful? Yes / No\nShare this article"))
    for j, (title, body) in enumerate(NEWS):
        rows.append(dclm_row(f"https://news-{j}.example.co/local/{2023}/{title.lower().replace(' ', '-')[:40]}",
                             f"{title}\n\nPublished 09:{10 + j} BST\n\n{body}\n\nMore local news"))
    for url, body in MISC:
        rows.append(dclm_row(url, body))
    for j, body in enumerate(SPAM):
        rows.append(dclm_row(f"https://spam-{j}.example.biz/index-{j}.html", body))
    for j in (0, 4, 6):  # near-duplicate re-posts of three reasoning pages
        url, text = reasoning[j]
        rows.append(dclm_row(url.replace(".example.", f".mirror{j}.example."), perturb(text, "Archived copy")))
    url, text = reasoning[8]
    rows.append(dclm_row(url.replace("https://", "https://www.") + "?ref=feed", text))  # exact duplicate text
    rows.append(dclm_row("https://blank.example.com/empty-page", ""))
    rows.append(dclm_row("https://blank.example.com/whitespace-page", "   \n\t  \n"))
    return rows


# --------------------------------------------------------------------------- FineMath-like pages


def fm_quadratic(i):
    r1, r2 = R.choice([(2, 5), (-3, 4), (1, -7), (3, 3), (-2, -6)])
    b, c = -(r1 + r2), r1 * r2
    disc = b * b - 4 * c
    return f"""Solving x^2 {'+' if b >= 0 else '-'} {abs(b)}x {'+' if c >= 0 else '-'} {abs(c)} = 0 three ways

We solve $x^2 {'+' if b >= 0 else '-'} {abs(b)}x {'+' if c >= 0 else '-'} {abs(c)} = 0$.

Method 1, factoring. We need two numbers whose product is {c} and whose sum is {-b}: they are {r1} and {r2}, so $(x - {r1})(x - {r2}) = 0$ and $x = {r1}$ or $x = {r2}$.

Method 2, the quadratic formula. The discriminant is $b^2 - 4ac = {b}^2 - 4({c}) = {disc}$, so $x = \\frac{{{-b} \\pm \\sqrt{{{disc}}}}}{{2}}$, which gives {r1} and {r2} again. Since the discriminant is {'zero, the root is repeated' if disc == 0 else 'positive, there are two distinct real roots'}.

Method 3, completing the square. $x^2 {'+' if b >= 0 else '-'} {abs(b)}x = {-c}$; add $({b}/2)^2 = {b * b / 4:g}$ to both sides: $(x {'+' if b >= 0 else '-'} {abs(b) / 2:g})^2 = {b * b / 4 - c:g}$, so $x = {-b / 2:g} \\pm {math.sqrt(b * b / 4 - c):g}$.

Check with Vieta: the roots sum to {r1 + r2} $= -b$ and multiply to {r1 * r2} $= c$. All three methods agree."""


def fm_crt(i):
    m1, m2 = R.choice([(3, 5), (4, 7), (5, 9), (7, 11)])
    a1, a2 = R.randrange(m1), R.randrange(m2)
    x = next(v for v in range(m1 * m2) if v % m1 == a1 and v % m2 == a2)
    inv = pow(m1, -1, m2)
    return f"""Chinese Remainder Theorem example: x = {a1} mod {m1}, x = {a2} mod {m2}

Find all integers $x$ with $x \\equiv {a1} \\pmod{{{m1}}}$ and $x \\equiv {a2} \\pmod{{{m2}}}$.

Because $\\gcd({m1}, {m2}) = 1$, the CRT guarantees exactly one solution modulo ${m1 * m2}$.

Write $x = {a1} + {m1}k$. Substituting into the second congruence: ${a1} + {m1}k \\equiv {a2} \\pmod{{{m2}}}$, so ${m1}k \\equiv {(a2 - a1) % m2} \\pmod{{{m2}}}$.

The inverse of {m1} modulo {m2} is {inv}, since ${m1} \\cdot {inv} = {m1 * inv} \\equiv 1 \\pmod{{{m2}}}$. Multiplying, $k \\equiv {((a2 - a1) * inv) % m2} \\pmod{{{m2}}}$.

Therefore $x = {a1} + {m1} \\cdot {((a2 - a1) * inv) % m2} = {x}$, and the general solution is $x \\equiv {x} \\pmod{{{m1 * m2}}}$.

Check: ${x} = {m1} \\cdot {x // m1} + {x % m1}$ and ${x} = {m2} \\cdot {x // m2} + {x % m2}$. Both remainders match."""


def fm_inclusion_exclusion(i):
    n, a, b = R.choice([(100, 3, 5), (1000, 4, 6), (500, 6, 10), (200, 7, 11)])
    lcm = a * b // math.gcd(a, b)
    na, nb, nab = n // a, n // b, n // lcm
    return f"""How many integers from 1 to {n} are divisible by {a} or {b}?

Let $A$ be the multiples of {a} and $B$ the multiples of {b} in $\\{{1, \\dots, {n}\\}}$. Inclusion-exclusion says $|A \\cup B| = |A| + |B| - |A \\cap B|$, because numbers divisible by both are counted twice in $|A| + |B|$.

$|A| = \\lfloor {n}/{a} \\rfloor = {na}$ and $|B| = \\lfloor {n}/{b} \\rfloor = {nb}$.

A number is divisible by both exactly when it is divisible by $\\operatorname{{lcm}}({a}, {b}) = {lcm}$ (not {a * b} unless the two are coprime), so $|A \\cap B| = \\lfloor {n}/{lcm} \\rfloor = {nab}$.

Answer: ${na} + {nb} - {nab} = {na + nb - nab}$. The numbers divisible by neither: ${n} - {na + nb - nab} = {n - (na + nb - nab)}$."""


def fm_dice(i):
    k = R.choice([7, 8, 9, 10])
    ways = sum(1 for x in range(1, 7) for y in range(1, 7) if x + y == k)
    atleast = sum(1 for x in range(1, 7) for y in range(1, 7) if x + y >= k)
    return f"""Probability that two dice sum to {k}, and to at least {k}

Roll two fair six-sided dice. The sample space has $6 \\times 6 = 36$ equally likely ordered outcomes; ordering matters because (2,5) and (5,2) are different outcomes.

Outcomes with sum {k}: {', '.join(f'({x},{k - x})' for x in range(1, 7) if 1 <= k - x <= 6)}. That is {ways} outcomes, so $P(S = {k}) = {ways}/36 = {ways / 36:.4f}$.

For at least {k}, count the sums {k} through 12: {atleast} outcomes, so $P(S \\ge {k}) = {atleast}/36 = {atleast / 36:.4f}$.

A common error is to treat the 11 possible sums as equally likely; they are not, because different sums have different numbers of outcomes."""


def fm_series(i):
    a, r, n = R.choice([(3, 2, 8), (5, 3, 6), (1, 0.5, 10), (2, -2, 7)])
    s = a * (1 - r ** n) / (1 - r)
    return f"""Sum of a geometric series: first term {a}, ratio {r}, {n} terms

We want $S_{n} = \\sum_{{k=0}}^{{{n - 1}}} {a} \\cdot ({r})^k$.

Derivation: $S = a + ar + \\dots + ar^{{n-1}}$ and $rS = ar + \\dots + ar^n$. Subtracting, $S - rS = a - ar^n$, hence $S = a\\frac{{1 - r^n}}{{1 - r}}$ for $r \\ne 1$.

Here $S_{n} = {a} \\cdot \\frac{{1 - ({r})^{{{n}}}}}{{1 - ({r})}} = {s:g}$.

{'Since |r| < 1, the infinite series converges to a/(1-r) = ' + f'{a / (1 - r):g}.' if abs(r) < 1 else 'Since |r| >= 1, the infinite series diverges.'}"""


def fm_optimize(i):
    p = R.choice([40, 60, 100, 120])
    return f"""Maximising the area of a rectangle with fixed perimeter {p}

A rectangle has perimeter {p}. Which dimensions maximise its area?

Let the sides be $x$ and $y$. Then $2x + 2y = {p}$, so $y = {p // 2} - x$ and $A(x) = x({p // 2} - x) = {p // 2}x - x^2$ for $0 < x < {p // 2}$.

$A'(x) = {p // 2} - 2x = 0$ gives $x = {p / 4:g}$. Since $A''(x) = -2 < 0$, this critical point is a maximum.

So $x = y = {p / 4:g}$: the square. The maximum area is ${(p / 4) ** 2:g}$.

An argument without calculus: by AM-GM, $\\sqrt{{xy}} \\le \\frac{{x + y}}{{2}} = {p / 4:g}$, so $xy \\le {(p / 4) ** 2:g}$, with equality exactly when $x = y$."""


def fm_parts(i):
    n = R.choice([1, 2])
    if n == 1:
        return """Integration by parts: the integral of x e^x

Compute $\\int x e^x \\, dx$.

Choose $u = x$ (it becomes simpler when differentiated) and $dv = e^x dx$, so $du = dx$ and $v = e^x$.

By parts, $\\int u \\, dv = uv - \\int v \\, du = x e^x - \\int e^x dx = x e^x - e^x + C = (x - 1)e^x + C$.

Check by differentiating: $\\frac{d}{dx}[(x - 1)e^x] = e^x + (x - 1)e^x = x e^x$. Correct.

For the definite integral from 0 to 1: $[(x - 1)e^x]_0^1 = 0 - (-1) = 1$."""
    return """Integration by parts twice: the integral of x^2 sin x

Compute $\\int x^2 \\sin x \\, dx$.

First, $u = x^2$, $dv = \\sin x dx$, so $du = 2x dx$, $v = -\\cos x$: $\\int x^2 \\sin x dx = -x^2 \\cos x + \\int 2x \\cos x dx$.

Second, $u = 2x$, $dv = \\cos x dx$: $\\int 2x \\cos x dx = 2x \\sin x - \\int 2 \\sin x dx = 2x \\sin x + 2 \\cos x$.

Therefore $\\int x^2 \\sin x dx = -x^2 \\cos x + 2x \\sin x + 2\\cos x + C$.

Check: differentiating gives $-2x\\cos x + x^2 \\sin x + 2\\sin x + 2x\\cos x - 2\\sin x = x^2 \\sin x$."""


def fm_induction(i):
    return f"""Proof by induction that 1 + 2 + ... + n = n(n+1)/2 (and a check for n = {10 + i})

Claim: for every integer $n \\ge 1$, $\\sum_{{k=1}}^n k = \\frac{{n(n+1)}}{{2}}$.

Base case: $n = 1$ gives $1 = \\frac{{1 \\cdot 2}}{{2}}$. True.

Inductive step: assume the formula holds for $n$. Then $\\sum_{{k=1}}^{{n+1}} k = \\frac{{n(n+1)}}{{2}} + (n + 1) = \\frac{{(n+1)(n+2)}}{{2}}$, which is the formula for $n + 1$.

By induction the claim holds for all $n \\ge 1$. For $n = {10 + i}$ it gives ${(10 + i) * (11 + i) // 2}$.

Gauss's pairing argument gives the same result: write the sum forwards and backwards and add; each of the $n$ columns sums to $n + 1$, so twice the sum is $n(n+1)$."""


def fm_coin_change(i):
    target = R.choice([10, 12, 15, 20])
    coins = [1, 2, 5]
    ways = [1] + [0] * target
    for c in coins:
        for v in range(c, target + 1):
            ways[v] += ways[v - c]
    return f"""In how many ways can you pay {target} using coins of 1, 2 and 5?

The order of coins does not matter, so we count multisets. The generating function is $\\frac{{1}}{{(1 - x)(1 - x^2)(1 - x^5)}}$ and we need the coefficient of $x^{{{target}}}$.

Dynamic programming computes it: let $w[v]$ be the number of ways to pay $v$. Process coins one at a time; when coin $c$ is added, $w[v] \\mathrel{{+}}= w[v - c]$ for $v$ from $c$ upwards. Processing coins in the outer loop ensures each combination is counted once, not once per ordering.

After the 1-coins: $w[v] = 1$ for all $v$. After the 2-coins: $w[v] = \\lfloor v/2 \\rfloor + 1$. After the 5-coins the answer is $w[{target}] = {ways[target]}$.

Check by cases on the number of 5-coins $f$: for each $f$, the remainder $r = {target} - 5f$ can be paid with 1s and 2s in $\\lfloor r/2 \\rfloor + 1$ ways: {' + '.join(str((target - 5 * f) // 2 + 1) for f in range(target // 5 + 1))} = {ways[target]}."""


def fm_eigen(i):
    a, b, d = R.choice([(2, 1, 2), (4, 1, 1), (3, 2, 3), (5, 2, 2)])
    tr, det = a + d, a * d - b * b
    disc = math.sqrt(tr * tr - 4 * det)
    l1, l2 = (tr + disc) / 2, (tr - disc) / 2
    return f"""Eigenvalues of the symmetric matrix [[{a}, {b}], [{b}, {d}]]

Let $A = \\begin{{pmatrix}} {a} & {b} \\\\ {b} & {d} \\end{{pmatrix}}$. The characteristic polynomial is $\\det(A - \\lambda I) = ({a} - \\lambda)({d} - \\lambda) - {b * b} = \\lambda^2 - {tr}\\lambda + {det}$.

The roots are $\\lambda = \\frac{{{tr} \\pm \\sqrt{{{tr * tr} - {4 * det}}}}}{{2}}$, i.e. $\\lambda_1 = {l1:.4g}$ and $\\lambda_2 = {l2:.4g}$.

Checks: the eigenvalues sum to the trace {tr} and multiply to the determinant {det}. Because $A$ is symmetric, the eigenvalues are real and the eigenvectors for distinct eigenvalues are orthogonal; {'both eigenvalues are positive, so A is positive definite' if l2 > 0 else 'one eigenvalue is not positive, so A is not positive definite'}."""


DEEP = [fm_quadratic, fm_crt, fm_inclusion_exclusion, fm_dice, fm_series, fm_optimize, fm_parts, fm_induction,
        fm_coin_change, fm_eigen]


def build_finemath() -> list[dict]:
    rows, deep = [], []
    for i in range(len(DEEP)):
        text = DEEP[i](i)
        url = f"https://mathpages-{i}.example.edu/solutions/{DEEP[i].__name__[3:]}"
        deep.append((url, text))
        rows.append(finemath_row(url, text, round(R.uniform(3.6, 5.0), 3)))
    for slug, text in MORE_DEEP:
        rows.append(finemath_row(f"https://proofwiki-like.example.org/wiki/{slug}", text, round(R.uniform(3.6, 5.0), 3)))
    for i, text in enumerate(TRIVIAL_MATH):
        rows.append(finemath_row(f"https://kids-math-{i}.example.com/worksheets/{i}", text,
                                 round(R.uniform(1.0, 3.4), 3)))
    for i in range(4):
        n = 3 + i * 2
        text = f"Multiplication table of {n}\n" + "\n".join(f"{n} x {k} = {n * k}" for k in range(1, 11))
        rows.append(finemath_row(f"https://times-tables.example.com/table-of-{n}", text, round(R.uniform(1.0, 2.4), 3)))
    for j in (1, 8):  # the same solution posted on another site with small edits
        url, text = deep[j]
        edited = text.replace("Therefore", "So", 1).replace("We ", "Let us ", 1)
        rows.append(finemath_row(url.replace("mathpages", "mathmirror"),
                                 "Reposted solution\n\n" + edited + "\n\nSource: class notes.",
                                 round(R.uniform(3.6, 5.0), 3)))
    rows.append(finemath_row("https://mathpages-empty.example.edu/solutions/blank", "", 3.0))
    return rows


def main() -> None:
    for name, rows in (("dclm_baseline.jsonl", build_dclm()), ("finemath.jsonl", build_finemath())):
        with open(HERE / name, "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
