//! Fictional Chinese place names for generated maps, unique within a map.

use std::collections::BTreeSet;

use gridclue_core::rng::Rng;

const FIRST: &[&str] = &[
    "东", "西", "南", "北", "新", "华", "锦", "春", "金", "银", "松", "竹", "梅", "兰", "康", "乐",
    "安", "福", "和", "平", "明", "光", "泰", "祥", "瑞", "丰", "盛", "荣", "宁", "嘉", "泽", "晨",
    "星", "云", "青", "碧", "秀", "翠", "枫", "桂", "莲", "荷", "桃", "杏", "柳", "杨", "白", "丹",
    "紫", "玉", "彩", "昌", "隆", "兴", "德", "仁", "怡", "景", "洪", "海", "澄", "潮", "凌", "朝",
];

const SECOND: &[&str] = &[
    "园", "苑", "里", "城", "桥", "港", "湾", "林", "庄", "塘", "浜", "泾", "汇", "花", "河", "坊",
    "山", "堂", "门", "岸", "滨", "洲", "江", "溪", "川", "亭", "阁", "庭", "圃", "渡", "埠", "泓",
    "韵", "源", "田", "墩", "浦", "泉", "阳", "峰",
];

const THIRD: &[&str] = &[
    "东", "西", "南", "北", "中", "新", "一", "二", "三", "四", "五", "六", "七", "八", "九", "上",
    "下", "前", "后",
];

/// Draws names that are unique within one generated map.
pub(crate) struct NamePool {
    used: BTreeSet<String>,
    rng: Rng,
}

impl NamePool {
    pub(crate) fn new(seed: u64) -> Self {
        NamePool {
            used: BTreeSet::new(),
            rng: Rng::keyed(seed, &[0x6e61_6d65]),
        }
    }

    fn pick(&mut self, list: &[&'static str]) -> &'static str {
        list[self.rng.below(list.len())]
    }

    /// A fresh stem (2 or, once 2-character stems get scarce, 3 characters); the returned
    /// `stem + suffix` has not been returned before.
    pub(crate) fn draw(&mut self, suffix: &str) -> String {
        for attempt in 0..10_000u32 {
            let mut s = String::new();
            s.push_str(self.pick(FIRST));
            s.push_str(self.pick(SECOND));
            if attempt >= 20 {
                s.push_str(self.pick(THIRD));
            }
            if attempt >= 2_000 {
                s.push_str(self.pick(SECOND));
            }
            if !self.used.contains(&s) {
                self.used.insert(s.clone());
                s.push_str(suffix);
                return s;
            }
        }
        // Practically unreachable (millions of combinations); stay unique regardless.
        let s = format!("第{}", self.used.len() + 1);
        self.used.insert(s.clone());
        s + suffix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_and_deterministic() {
        let mut a = NamePool::new(3);
        let mut b = NamePool::new(3);
        let mut seen = BTreeSet::new();
        for _ in 0..5000 {
            let n = a.draw("社区");
            assert_eq!(n, b.draw("社区"));
            assert!(n.ends_with("社区"));
            assert!(seen.insert(n));
        }
    }
}
